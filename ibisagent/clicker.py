"""The reference click simulator: one small module that the oracle, synthesis, tool training, the
compact policy and the baselines all import (RITM's `Clicker` plays this role there).

An annotator who sees the reference mask: FN = gt & ~pred, FP = ~gt & pred; the Euclidean distance
transform of each (the image border counts as boundary); if max(dFN) >= max(dFP), a positive click
at argmax(dFN), else a negative click at argmax(dFP). This is the released rule (docs/protocol.md).
One difference, RITM's not-clicked map: a pixel already clicked is never chosen again (its distance
counts as 0), so a click the tool ignored is followed by the next deepest pixel instead of the same
one, which ended the released simulator's episode.
Masks are H x W bool arrays; clicks are (x, y) = (column, row) pixels.
"""

from __future__ import annotations

import random

import numpy as np


def error_distance(region: np.ndarray) -> np.ndarray:
    """Distance of each pixel of `region` (H x W bool) to its boundary or the image border, pixels
    (H x W float32, 0 outside the region).

    Computed on the region's bounding box grown by one pixel (zeros all round: the nearest
    background pixel of any region pixel lies within it), the same exact Euclidean result as on
    the whole image at a fraction of the cost once the errors are small."""
    import cv2

    region = np.asarray(region, bool)
    out = np.zeros(region.shape, np.float32)
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if rows.size == 0:
        return out
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    padded = np.pad(region[r0:r1, c0:c1].astype(np.uint8), 1)
    out[r0:r1, c0:c1] = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return out


def click_in(region: np.ndarray, rng: random.Random | None = None, randomise: bool = False) -> tuple[int, int] | None:
    """(x, y) in `region` (H x W bool): its deepest pixel, or (`randomise`, with `rng`) a random pixel
    at least half as deep, as tool training varies its clicks. None for an empty region."""
    return _pick(error_distance(region), rng, randomise)


def _pick(depth: np.ndarray, rng: random.Random | None, randomise: bool) -> tuple[int, int] | None:
    """`click_in` on a region's distance map (`error_distance`), computed once by the caller."""
    top = float(depth.max())
    if top <= 0:
        return None
    if randomise:
        ys, xs = np.nonzero(depth >= top / 2)
        i = rng.randrange(len(xs))
        return int(xs[i]), int(ys[i])
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(c), int(r)


def not_clicked(depth: np.ndarray, clicked) -> np.ndarray:
    """`depth` (H x W) with the pixels of `clicked` ((x, y) pixels, any iterable; outside the image
    ignored) set to 0: RITM's not-clicked map. Returns `depth` itself when nothing changes."""
    H, W = depth.shape
    hit = [(int(y), int(x)) for x, y in clicked if 0 <= int(x) < W and 0 <= int(y) < H]
    if hit:
        depth = depth.copy()
        rows, cols = zip(*hit)
        depth[list(rows), list(cols)] = 0
    return depth


def next_click(
    pred: np.ndarray, gt: np.ndarray, rng: random.Random | None = None, p_random: float = 0.0, clicked=()
) -> tuple[int, int, int, float] | None:
    """The simulator's next click: (x, y, label, depth) with (x, y) pixels, label 1 positive /
    0 negative and depth the larger error's distance to its boundary (pixels). None when pred == gt
    or every error pixel has been clicked already.

    `clicked`: the (x, y) pixels clicked so far (labels, if present, are ignored), never chosen again.
    Deterministic (the released rule) unless `rng` is given: then with probability `p_random` the
    click is a random pixel at least half as deep in the same error region (tool training)."""
    clicked = [c[:2] for c in clicked]
    fn_d = not_clicked(error_distance(gt & ~pred), clicked)
    fp_d = not_clicked(error_distance(~gt & pred), clicked)
    fn_max, fp_max = float(fn_d.max()), float(fp_d.max())
    if fn_max == 0 and fp_max == 0:
        return None
    depth_map, label, depth = (fn_d, 1, fn_max) if fn_max >= fp_max else (fp_d, 0, fp_max)
    x, y = _pick(depth_map, rng, randomise=rng is not None and rng.random() < p_random)
    return x, y, label, depth

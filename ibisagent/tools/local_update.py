"""Local update after a refining click (FocalClick's progressive merge).

From the second click on, the mask decoder re-predicts the whole mask from all clicks and the
previous logits. On a target of many parts or thin branches (nuclei, vessels) that new mask often
drops parts the earlier clicks had found: a click on one nucleus erases its neighbours, and more
clicks make the mask worse. The local update keeps the previous logits everywhere except in the
connected regions of change (new mask XOR previous mask) that touch the new click, so a click
changes what it touches and nothing else.

Where the click touches no change (the decoder ignored it), `fallback` decides: "new" takes the
decoder's whole new answer (as without the update), "keep" keeps the previous logits unchanged.

Arrays are the tool's low-res logit grids (H x W float32, e.g. LiteMedSAM's 256 x 256 with the
image in the top-left `valid` rows and columns); the click is (x, y) = (column, row) in that grid.
"""

from __future__ import annotations

import numpy as np

FALLBACKS = ("new", "keep")


def changed_regions_at(
    new: np.ndarray, prev: np.ndarray, click_xy: tuple[float, float], valid: tuple[int, int] | None = None
) -> np.ndarray:
    """H x W bool: the 8-connected regions of (new > 0) XOR (prev > 0) within `valid` (rows, cols;
    the whole grid when None) that touch the 3 x 3 cells around `click_xy` (x, y grid cells; a
    click between cells still finds the change beside it). All False when none does."""
    import cv2

    h, w = valid if valid is not None else new.shape
    diff = np.zeros(new.shape, np.uint8)
    diff[:h, :w] = (new[:h, :w] > 0) != (prev[:h, :w] > 0)
    x = int(np.clip(round(float(click_xy[0])), 0, w - 1))
    y = int(np.clip(round(float(click_xy[1])), 0, h - 1))
    if not diff[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].any():
        return np.zeros(new.shape, bool)
    _, labels = cv2.connectedComponents(diff, connectivity=8)
    touched = np.unique(labels[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2])
    touched = touched[touched > 0]
    return np.isin(labels, touched)


def merge_local(
    new: np.ndarray,
    prev: np.ndarray,
    click_xy: tuple[float, float],
    valid: tuple[int, int] | None = None,
    fallback: str = "new",
) -> np.ndarray:
    """Logits (H x W float32) equal to `prev` except in the changed regions touching the click,
    where they are `new`. With no change at the click, `new` (fallback "new") or `prev` ("keep")."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    region = changed_regions_at(new, prev, click_xy, valid)
    if not region.any():
        return (new if fallback == "new" else prev).astype(np.float32, copy=True)
    return np.where(region, new, prev).astype(np.float32)

"""The click simulator of the reference system (spec section 4), as a policy.

An annotator that sees the reference mask: FN = gt & ~pred, FP = ~gt & pred; the Euclidean
distance transform of each (the image border counts as boundary); if max(dFN) >= max(dFP), a
positive click at argmax(dFN), else a negative click at argmax(dFP). It stops when the IoU
reaches `iou_threshold` or nothing is left to fix.
"""

from __future__ import annotations

import numpy as np

from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.eval.metrics import iou
from ibisagent.policies.base import Policy


def error_distance(region: np.ndarray) -> np.ndarray:
    """Distance of each pixel of `region` (H x W bool) to its boundary or the image border, pixels.

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


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, float] | None:
    """The simulator's next click: (x, y, label, depth) with (x, y) pixels, label 1 positive /
    0 negative and depth the distance to the error region's boundary. None when pred == gt."""
    fn_d = error_distance(gt & ~pred)
    fp_d = error_distance(~gt & pred)
    fn_max, fp_max = float(fn_d.max()), float(fp_d.max())
    if fn_max == 0 and fp_max == 0:
        return None
    if fn_max >= fp_max:
        r, c = np.unravel_index(int(np.argmax(fn_d)), fn_d.shape)
        return int(c), int(r), 1, fn_max
    r, c = np.unravel_index(int(np.argmax(fp_d)), fp_d.shape)
    return int(c), int(r), 0, fp_max


def normalise(x: int, y: int, width: int, height: int) -> tuple[float, float]:
    """Pixel centre -> normalised (x, y) that maps back to the same pixel via int(x * W)."""
    return (x + 0.5) / width, (y + 0.5) / height


class OraclePolicy(Policy):
    """Imitates an annotator from the reference mask. `iou_threshold` 0.8 as released (use 1.0
    to never stop early, as interactive benchmarks do)."""

    name = "oracle"
    needs_reference = True

    def __init__(self, iou_threshold: float = 0.8):
        self.iou_threshold = iou_threshold
        self.gt: np.ndarray | None = None

    def begin(self, query: str, gt_mask=None) -> None:
        if gt_mask is None:
            raise ValueError("the oracle policy needs a reference mask")
        self.gt = np.asarray(gt_mask, bool)

    def act(self, obs: Observation, episode: Episode) -> str:
        gt, pred = self.gt, obs.mask
        H, W = gt.shape
        if not gt.any():
            return format_response(
                "The reference shows no target in this image, so there is nothing to segment.",
                "stop",
                answer="No target found.",
            )
        cur = iou(pred, gt)
        click = next_click(pred, gt)
        if click is None or (obs.step > 0 and cur >= self.iou_threshold):
            return format_response(
                f"The mask overlaps the target with IoU {cur:.2f}, which meets the goal; no further click is needed.",
                "stop",
                answer="Yes, the target is segmented.",
            )
        x, y, label, depth = click
        nx, ny = normalise(x, y, W, H)
        if label == 1:
            why = (
                "There is no mask yet; I place a positive point deep inside the target."
                if not pred.any()
                else f"The mask misses part of the target; the largest missed region is about {2 * depth:.0f} px wide around this point."
            )
            return format_response(why, "positive", nx, ny)
        why = f"The mask spills outside the target; the largest extra region is about {2 * depth:.0f} px wide around this point."
        return format_response(why, "negative", nx, ny)

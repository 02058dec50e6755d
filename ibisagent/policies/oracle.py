"""The reference click simulator (`ibisagent.clicker`, docs/protocol.md) as a policy: it clicks
where the simulator says and stops when the IoU reaches `iou_threshold` or nothing is left to fix.
"""

from __future__ import annotations

import numpy as np

from ibisagent.clicker import next_click
from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.geometry import pixel_to_norm
from ibisagent.metrics import iou
from ibisagent.policies.base import Policy


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
        click = next_click(pred, gt, clicked=obs.clicks)  # never the same pixel twice
        if click is None or (obs.step > 0 and cur >= self.iou_threshold):
            return format_response(
                f"The mask overlaps the target with IoU {cur:.2f}, which meets the goal; no further click is needed.",
                "stop",
                answer="Yes, the target is segmented.",
            )
        x, y, label, depth = click
        nx, ny = pixel_to_norm(x, y, W, H)
        if label == 1:
            why = (
                "There is no mask yet; I place a positive point deep inside the target."
                if not pred.any()
                else f"The mask misses part of the target; the largest missed region is about {2 * depth:.0f} px wide around this point."
            )
            return format_response(why, "positive", nx, ny)
        why = f"The mask spills outside the target; the largest extra region is about {2 * depth:.0f} px wide around this point."
        return format_response(why, "negative", nx, ny)

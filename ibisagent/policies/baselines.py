"""Baseline policies for the evaluation harness: lower and reference bounds beside learned agents.

- `CentreClickPolicy` ("centre"): one positive point at the image centre, then stop. Sees nothing.
- `RandomClickPolicy` ("random[:K]"): K positive points uniformly over the image, then stop;
  seeded per episode through `reseed` (the harness derives the seed from the run seed, the sample
  and the policy), so runs are reproducible whatever the worker count or order.
- `BoxPromptPolicy` ("box"): the tool prompted once with the tight box of the reference mask
  (what a box-prompted SAM gets in the literature), then stop. Needs the reference mask.

The box baseline is not a click, so it cannot travel through the text protocol. It exposes the
optional hook `initial_prompt(tool, embedding, gt) -> H x W bool mask`, which the harness calls
before the episode and passes to the environment as the initial mask; the policy then stops.
"""

from __future__ import annotations

import numpy as np

from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.errors import IbisInputError
from ibisagent.geometry import pixel_to_norm
from ibisagent.policies.base import Policy


def _stop(why: str) -> str:
    return format_response(why, "stop", answer="A mask is placed (blind baseline, no yes/no judgement).")


class CentreClickPolicy(Policy):
    """One positive point at the image centre (normalised (0.5, 0.5)), then stop."""

    name = "centre"

    def act(self, obs: Observation, episode: Episode) -> str:
        if obs.clicks:
            return _stop("A blind baseline: one click at the centre, nothing more.")
        return format_response("A blind baseline: a positive point at the image centre.", "positive", 0.5, 0.5)


def largest_salient_region(image: np.ndarray) -> np.ndarray:
    """H x W bool: the largest connected region brighter than Otsu's threshold of the grey image
    (a text-free guess at "the object"); empty for a flat image."""
    import cv2

    grey = image if image.ndim == 2 else image[..., :3].mean(-1)
    grey = cv2.normalize(grey.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if grey.max() == grey.min():
        return np.zeros(grey.shape, bool)
    _, fg = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8))
    if n <= 1:
        return np.zeros(grey.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


class SalientClickPolicy(Policy):
    """One positive point at the deepest pixel of the largest salient region, then stop: the
    text-free baseline that "segments the obvious object" whatever the query."""

    name = "salient"

    def act(self, obs: Observation, episode: Episode) -> str:
        from ibisagent.clicker import error_distance

        if obs.clicks:
            return _stop("A blind baseline: one click in the largest salient region, nothing more.")
        region = largest_salient_region(obs.original)
        H, W = region.shape
        if not region.any():
            return format_response("A blind baseline: a flat image, a point at the centre.", "positive", 0.5, 0.5)
        r, c = np.unravel_index(int(np.argmax(error_distance(region))), region.shape)
        x, y = pixel_to_norm(int(c), int(r), W, H)
        return format_response("A blind baseline: a point deep inside the largest bright region.", "positive", x, y)


class RandomClickPolicy(Policy):
    """`n_clicks` positive points drawn uniformly over the image pixels, then stop.

    Coordinates are pixel centres normalised to [0, 1] (x = column / W, y = row / H).
    """

    name = "random"

    def __init__(self, n_clicks: int = 1, seed: int = 0):
        if n_clicks < 1:
            raise IbisInputError(f"random:{n_clicks}", "the random baseline needs at least 1 click")
        self.n_clicks = n_clicks
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream; the harness calls this before every episode."""
        self.rng = np.random.default_rng(seed)

    def act(self, obs: Observation, episode: Episode) -> str:
        if len(obs.clicks) >= self.n_clicks:
            return _stop(f"A blind baseline: {self.n_clicks} random click(s) placed.")
        H, W = obs.original.shape[:2]
        x, y = pixel_to_norm(int(self.rng.integers(W)), int(self.rng.integers(H)), W, H)
        return format_response("A blind baseline: a positive point at a random pixel.", "positive", x, y)


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight box of an H x W bool mask as [x0, y0, x1, y1] pixels (inclusive), None when empty."""
    rows = np.flatnonzero(np.asarray(mask, bool).any(axis=1))
    cols = np.flatnonzero(np.asarray(mask, bool).any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.float32)


class BoxPromptPolicy(Policy):
    """The tool prompted with the reference mask's tight box (via `initial_prompt`), then stop."""

    name = "box"
    needs_reference = True

    def initial_prompt(self, tool, embedding, gt: np.ndarray) -> np.ndarray:
        """H x W bool mask from one box prompt; empty when the reference is empty."""
        box = mask_box(gt)
        if box is None:
            return np.zeros(np.asarray(gt).shape, bool)
        return tool.predict(embedding, box=box).mask

    def act(self, obs: Observation, episode: Episode) -> str:
        return _stop("A reference baseline: the tool was prompted once with the reference box.")

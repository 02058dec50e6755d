"""Files of a synthesis run: original images, reference masks and the VLM's observation images.

Layout under the output folder (all written atomically, names derived from content keys, so a
rerun after a kill rewrites identical files):
- images/src/<key>.png    the original image, full resolution (what the tool encodes)
- images/src/<key>.obs.png the original resized for the VLM (the first observation)
- masks/<key>.png          the reference mask, 0/255, full resolution
- images/obs/<traj>/<t>.png the overlay shown before step t, resized for the VLM
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from ibisagent.io.images import save_mask_png, save_png
from ibisagent.overlay import render_overlay

DEFAULT_MAX_PIXELS = 512 * 512  # the reference SFT recipe: images at most 512 x 512 pixels


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def fit_pixels(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """`image` (H x W x 3 uint8) downscaled (area interpolation, aspect kept) so that H * W <=
    `max_pixels`; unchanged when it already fits or `max_pixels` is 0."""
    import cv2

    H, W = image.shape[:2]
    if not max_pixels or H * W <= max_pixels:
        return image
    s = (max_pixels / (H * W)) ** 0.5
    return cv2.resize(image, (max(1, int(W * s)), max(1, int(H * s))), interpolation=cv2.INTER_AREA)


class Store:
    """Writes a run's image files under `root`; `render_s` accumulates overlay + PNG time.

    Step overlays are queued by `observation` and drawn by `commit` once the trajectory is kept
    (`discard` drops them): many items are skipped only after their last click (the tool never
    reaches the minimum IoU), and drawing their overlays would be wasted and leave orphan files."""

    def __init__(self, root: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.root = Path(root)
        self.max_pixels = max_pixels
        self.render_s = 0.0
        self._pending: list[tuple[str, np.ndarray, np.ndarray]] = []

    def source(self, image_key: str, image: np.ndarray) -> str:
        rel = f"images/src/{short_hash(image_key)}.png"
        if not (self.root / rel).exists():
            save_png(self.root / rel, image)
        return rel

    def mask(self, key: str, mask: np.ndarray) -> str:
        rel = f"masks/{short_hash(key)}.png"
        if not (self.root / rel).exists():
            save_mask_png(self.root / rel, mask)
        return rel

    def observation(self, image_key: str, traj_id: str, step: int, image: np.ndarray, mask: np.ndarray | None) -> str:
        """The image shown before `step`: the resized original when there is no mask, else the
        overlay (the one renderer, at full resolution) resized."""
        t0 = time.perf_counter()
        if mask is None or not mask.any():
            rel = f"images/src/{short_hash(image_key)}.obs.png"
            if not (self.root / rel).exists():
                save_png(self.root / rel, fit_pixels(image, self.max_pixels))
        else:
            rel = f"images/obs/{short_hash(traj_id)}/{step:02d}.png"
            self._pending.append((rel, image, mask.copy()))
        self.render_s += time.perf_counter() - t0
        return rel

    def commit(self) -> None:
        """Draw and write the queued overlays."""
        t0 = time.perf_counter()
        for rel, image, mask in self._pending:
            save_png(self.root / rel, fit_pixels(render_overlay(image, mask), self.max_pixels))
        self._pending.clear()
        self.render_s += time.perf_counter() - t0

    def discard(self) -> None:
        self._pending.clear()

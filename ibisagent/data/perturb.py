"""Seeded corruptions of a reference mask: the given initial mask of a refinement query.

Each recipe mimics a typical error of a segmenter or a hurried annotator. Same (mask, recipe,
seed) -> same result. Masks are H x W bool.
"""

from __future__ import annotations

import random

import cv2
import numpy as np

from ibisagent.errors import IbisInputError

PERTURBATIONS = ("erode", "dilate", "shift", "partial", "extra_blob")


def _radius(mask: np.ndarray, frac: float) -> int:
    ys, xs = np.nonzero(mask)
    extent = max(np.ptp(ys) + 1, np.ptp(xs) + 1) if ys.size else 1
    return max(1, round(extent * frac))


def perturb_mask(mask: np.ndarray, recipe: str, seed: int = 0) -> np.ndarray:
    """A corrupted copy of `mask` (H x W bool). Recipes: erode/dilate (boundary 8-20% of the
    object's extent), shift (10-25% of the extent), partial (one half cut off along a random
    direction), extra_blob (a false region beside the object)."""
    m = np.asarray(mask, bool)
    if recipe not in PERTURBATIONS:
        raise IbisInputError(recipe, f"unknown perturbation; choose from {', '.join(PERTURBATIONS)}")
    if not m.any():
        return m.copy()
    rng = random.Random(f"{seed}:{recipe}:{int(m.sum())}")
    u8 = m.astype(np.uint8)
    h, w = m.shape
    if recipe in ("erode", "dilate"):
        r = _radius(m, rng.uniform(0.08, 0.2))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        out = (cv2.erode if recipe == "erode" else cv2.dilate)(u8, kernel) > 0
        if not out.any():  # too thin to erode: grow it instead, so the given mask is still wrong
            out = cv2.dilate(u8, kernel) > 0
        return out
    if recipe == "shift":
        d, angle = _radius(m, rng.uniform(0.1, 0.25)), rng.uniform(0, 2 * np.pi)
        shift = np.float32([[1, 0, d * np.cos(angle)], [0, 1, d * np.sin(angle)]])
        return cv2.warpAffine(u8, shift, (w, h), flags=cv2.INTER_NEAREST) > 0
    ys, xs = np.nonzero(m)
    cy, cx = ys.mean(), xs.mean()
    if recipe == "partial":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        return m & (((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) < 0)
    r = _radius(m, rng.uniform(0.15, 0.3))
    angle = rng.uniform(0, 2 * np.pi)
    dist = _radius(m, 0.5) + r
    bx, by = int(np.clip(cx + dist * np.cos(angle), 0, w - 1)), int(np.clip(cy + dist * np.sin(angle), 0, h - 1))
    blob = cv2.circle(np.zeros((h, w), np.uint8), (bx, by), r, 1, -1) > 0
    return m | blob

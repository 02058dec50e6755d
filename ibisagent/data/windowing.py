"""Intensity windowing of volume slices to 8-bit.

CT presets are (level, width) in Hounsfield units, the values radiology viewers ship with.
MR (and anything without calibrated units) uses percentile windowing: the `lo`-th to `hi`-th
percentile of the non-zero voxels of the whole volume, computed once per volume so all slices
share one contrast.
"""

from __future__ import annotations

import numpy as np

from ibisagent.errors import IbisInputError

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
WINDOW_CHOICES = ("auto", "percentile", *CT_WINDOWS)
PERCENTILES = (0.5, 99.5)
PERCENTILE_SAMPLE = 2_000_000  # voxels sampled for percentiles: bounded time and memory


def ct_window(name: str) -> tuple[float, float]:
    """(low, high) HU of a named CT preset."""
    if name not in CT_WINDOWS:
        raise IbisInputError(name, f"unknown CT window; choose one of {', '.join(CT_WINDOWS)}")
    level, width = CT_WINDOWS[name]
    return level - width / 2, level + width / 2


def percentile_window(
    volume: np.ndarray, lo: float = PERCENTILES[0], hi: float = PERCENTILES[1]
) -> tuple[float, float]:
    """(low, high) from percentiles of the non-zero finite voxels (a strided sample of at most
    PERCENTILE_SAMPLE voxels, so a big volume is not copied as float64)."""
    flat = np.asarray(volume).reshape(-1)
    step = max(1, flat.size // PERCENTILE_SAMPLE)
    sample = flat[::step].astype(np.float32)
    sample = sample[np.isfinite(sample) & (sample != 0)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(sample, [lo, hi])
    return float(low), float(high) if high > low else float(low) + 1.0


def resolve_window(volume: np.ndarray, window: str, modality: str) -> tuple[float, float]:
    """(low, high) for `window`: a CT preset name, "percentile", or "auto" (CT -> abdomen,
    anything else -> percentile)."""
    if window == "auto":
        window = "abdomen" if modality.upper().startswith("CT") else "percentile"
    if window == "percentile":
        return percentile_window(volume)
    return ct_window(window)


def to_uint8(slice2d: np.ndarray, low: float, high: float) -> np.ndarray:
    """H x W values -> H x W uint8, `low` -> 0 and `high` -> 255, clipped (float32 math)."""
    s = np.asarray(slice2d, dtype=np.float32)
    scale = np.float32(255.0 / (high - low)) if high > low else np.float32(0.0)
    out = (s - np.float32(low)) * scale
    np.nan_to_num(out, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

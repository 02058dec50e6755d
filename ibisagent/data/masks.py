"""Binary masks from files or arrays, with the checks a dataset needs.

A mask is H x W bool (True = target). Accepted encodings: bool, 0/1, 0/255, or any {0, v}
pair; RGB(A) masks use the channel maximum. Lossy (JPEG) masks whose pixels sit almost all near
0 and 255 are thresholded at 127. Anything else (three or more distinct values) is a label map
and is refused with a message, never silently thresholded: give one binary mask per target, or
a label map with a value->name map (`ibisagent.data.volumes`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError

NEAR_BINARY_FRACTION = 0.98  # share of pixels within 20 of 0 or 255 for a lossy 8-bit mask


def mask_from_array(arr: np.ndarray, what: object = "mask", shape: tuple[int, int] | None = None) -> np.ndarray:
    """H x W (x C) array -> H x W bool; `shape` (H, W) must match when given."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3].max(axis=2)
    if arr.ndim != 2:
        raise IbisInputError(what, f"expected a 2D mask, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise IbisInputError(
            what, f"mask is {arr.shape[1]} x {arr.shape[0]} pixels but the image is {shape[1]} x {shape[0]}"
        )
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise IbisInputError(what, f"unsupported mask pixel type {arr.dtype}")
    values = np.unique(arr)
    if values.size <= 2 and (values.size == 1 or values[0] == 0):
        return arr != 0 if values.size == 2 or values[0] != 0 else np.zeros(arr.shape, bool)
    if arr.dtype == np.uint8 and values[-1] >= 235 and values[0] <= 20:
        near = np.count_nonzero((arr <= 20) | (arr >= 235))
        if near >= NEAR_BINARY_FRACTION * arr.size:
            return arr > 127
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
    raise IbisInputError(
        what,
        f"mask is not binary ({values.size} distinct values: {shown}); looks like a label map: "
        "give one 0/1 or 0/255 mask per target, or a label map with a value->name map",
    )


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask file (PNG/JPG/TIFF/.npy) as H x W bool; errors name the file."""
    from ibisagent.io.images import read_array

    return mask_from_array(read_array(path), what=path, shape=shape)

"""Row-major run-length encoding of binary masks: the mask format of the REST API and the data files.

`{"size": [H, W], "counts": [n0, n1, ...]}`: alternating runs of False and True pixels in
row-major (C) order, starting with False. Counts are pixels; `sum(counts) == H * W`.
This is not COCO's RLE: the field names match COCO's uncompressed form, but COCO runs down the
columns (Fortran order). Decode a COCO RLE with pycocotools (`pycocotools.mask.decode`) and encode
the H x W mask here.

`rle_decode` takes data from clients and servers, so it checks everything with Python integers
(which do not wrap) before it allocates: a size that is not two non-negative integers, more
pixels than `max_pixels`, a count that is negative, not an integer or beyond the image, or counts
that do not add up to H * W are an `IbisInputError` (a `ValueError`), never an overflow.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import numpy as np

from ibisagent.errors import IbisInputError

MAX_RLE_PIXELS = 80_000_000  # as ibisagent.io.images.MAX_PIXELS: the largest 2D mask decoded by default


def rle_encode(mask: np.ndarray) -> dict:
    """H x W bool (or 0/1) mask -> {"size": [H, W], "counts": [...]} (plain Python ints)."""
    flat = np.asarray(mask, bool).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": list(np.asarray(mask).shape), "counts": [int(c) for c in counts]}


def _int(value, what: str) -> int:
    """A Python int from an int-like value (numpy integers included); bools, floats, strings refused."""
    if isinstance(value, (bool, np.bool_)):
        raise IbisInputError("RLE", f"{what} must be integers, got a boolean")
    try:
        return operator.index(value)
    except TypeError:
        raise IbisInputError("RLE", f"{what} must be integers, got {type(value).__name__}") from None


def rle_decode(rle: Mapping, shape: tuple[int, int] | None = None, max_pixels: int = MAX_RLE_PIXELS) -> np.ndarray:
    """{"size": [H, W], "counts": [...]} -> H x W bool, validated before any allocation.

    shape: (H, W) the mask must have, if given. max_pixels: the largest H * W accepted.
    Raises IbisInputError (a ValueError) with a one-line problem for any malformed input.
    """
    if not isinstance(rle, Mapping):
        raise IbisInputError("RLE", f"expected an object {{'size': [H, W], 'counts': [...]}}, got {type(rle).__name__}")
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(size, (list, tuple, np.ndarray)) or len(size) != 2:
        raise IbisInputError("RLE", "'size' must be [H, W]")
    h, w = (_int(v, "'size'") for v in size)
    if h < 0 or w < 0:
        raise IbisInputError("RLE", f"'size' [{h}, {w}] is negative")
    n = h * w
    if n > max_pixels:
        raise IbisInputError("RLE", f"mask of {w} x {h} = {n:,} pixels is larger than the {max_pixels:,} limit")
    if shape is not None and (h, w) != tuple(int(v) for v in shape):
        raise IbisInputError("RLE", f"mask is {w} x {h} pixels but the image is {shape[1]} x {shape[0]}")
    if isinstance(counts, np.ndarray):
        if counts.ndim != 1 or counts.dtype.kind not in "iu":
            raise IbisInputError("RLE", "'counts' must be a list of integers")
        counts = counts.tolist()
    if not isinstance(counts, (list, tuple)):
        raise IbisInputError("RLE", "'counts' must be a list of integers")
    if len(counts) > n + 2:  # every run but the first (and one trailing) has at least one pixel
        raise IbisInputError("RLE", f"{len(counts):,} counts for {n:,} pixels")
    runs = [_int(c, "'counts'") for c in counts]
    total = 0
    for c in runs:
        if c < 0:
            raise IbisInputError("RLE", f"negative count {c}")
        total += c
        if total > n:
            break
    if total != n:
        raise IbisInputError("RLE", f"counts sum to {sum(runs)}, expected H x W = {n}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, np.asarray(runs, np.int64)).reshape(h, w)

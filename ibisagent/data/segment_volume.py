"""Segment a 3D volume slice by slice with any 2D segmenter and write a NIfTI mask.

`segment_slice(image) -> mask` is called per slice with an H x W x 3 uint8 display-oriented
image (see `volume_io`: axial top = anterior, image left = patient right) and must return an
H x W bool mask. The masks are put back into the stored voxel order and written as a uint8
NIfTI (1 = target) with the input's affine and header (qform/sform kept), so it opens over the
original in 3D Slicer or ITK-SNAP. Memory: one uint8 mask volume plus one slice at a time.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibisagent.data.scans import load_volume
from ibisagent.data.volume_io import Volume, _nib, axis_index, from_display, plane_index
from ibisagent.data.windowing import to_uint8
from ibisagent.errors import IbisInputError

SliceSegmenter = Callable[[np.ndarray], np.ndarray]


@dataclass
class VolumeResult:
    path: Path
    slices: list[int]
    voxels: int
    seconds: float


def parse_slice_range(text: str | None, n: int) -> list[int]:
    """`None`/"all" -> every slice; "40:60" -> 40..59; "40:60:2"; "12" -> [12]. Checked against n."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return list(range(n))
    try:
        parts = [int(p) if p.strip() else None for p in str(text).split(":")]
    except ValueError:
        raise IbisInputError(text, "slice range is START:STOP[:STEP] or one index, e.g. 40:60") from None
    if len(parts) == 1:
        idx = [parts[0]]
    elif len(parts) in (2, 3):
        if len(parts) == 3 and parts[2] == 0:
            raise IbisInputError(text, "the slice step must not be 0")
        idx = list(range(n))[slice(*parts)]
    else:
        raise IbisInputError(text, "slice range is START:STOP[:STEP] or one index, e.g. 40:60")
    if not idx or any(not 0 <= i < n for i in idx):
        raise IbisInputError(text, f"slice range selects no slices inside 0..{n - 1}")
    return idx


def segment_volume(
    volume,
    segment_slice: SliceSegmenter,
    out: str | Path,
    axis: str = "axial",
    slices: str | list[int] | None = None,
    window: str = "auto",
    on_slice: Callable[[int, int], None] | None = None,
) -> VolumeResult:
    """Run `segment_slice` over the chosen slices of `volume` (NIfTI path, DICOM folder, nibabel
    image or Volume) and write the mask NIfTI to `out` (.nii or .nii.gz), atomically.

    slices: None or "all", "START:STOP[:STEP]", or a list of indices along `axis`.
    on_slice(i, total): progress callback.
    """
    nib = _nib()
    from ibisagent.io.images import atomic_write_bytes

    out = Path(out)
    if not str(out).lower().endswith((".nii", ".nii.gz")):
        raise IbisInputError(out, "the output mask must be .nii or .nii.gz")
    vol = volume if isinstance(volume, Volume) else load_volume(volume)
    a = axis_index(axis)
    n = vol.data.shape[a]
    idx = slices if isinstance(slices, list) else parse_slice_range(slices, n)
    low, high = vol.window_range(window)
    mask = np.zeros(vol.data.shape, np.uint8)
    t0 = time.perf_counter()
    for i, k in enumerate(idx):
        grey = to_uint8(vol.intensity(a, k), low, high)
        pred = np.asarray(segment_slice(np.repeat(grey[..., None], 3, axis=2)))
        if pred.shape != grey.shape:
            raise IbisInputError(
                f"{vol.source} slice {k}", f"segmenter returned shape {pred.shape}, expected {grey.shape}"
            )
        mask[plane_index(a, k)] = from_display(pred.astype(bool))
        if on_slice:
            on_slice(i, len(idx))
    native = np.ascontiguousarray(vol.native(mask))
    header = vol.header.copy() if isinstance(vol.header, nib.Nifti1Header) else nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(native, vol.affine, header)
    if isinstance(vol.header, nib.Nifti1Header):  # keep the input's codes exactly
        img.set_sform(vol.header.get_sform(), int(vol.header["sform_code"]))
        img.set_qform(vol.header.get_qform(), int(vol.header["qform_code"]))
    else:
        img.set_sform(vol.affine, 1)
        img.set_qform(vol.affine, 1)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0
    img.header["descrip"] = b"ibisagent mask"
    data = img.to_bytes()
    atomic_write_bytes(out, gzip.compress(data, compresslevel=4) if str(out).lower().endswith(".gz") else data)
    return VolumeResult(out, idx, int(np.count_nonzero(mask)), time.perf_counter() - t0)

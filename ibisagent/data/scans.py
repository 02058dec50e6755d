"""The one reader of scans: a NIfTI file, a DICOM series folder or one DICOM file -> `Volume`
(data.volume_io holds the type and the NIfTI checks, data.dicom the DICOM reader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ibisagent.data.dicom import is_dicom_file, load_dicom_series
from ibisagent.data.volume_io import (
    MAX_VOLUME_BYTES,
    Volume,
    _nib,
    check_nifti,
    from_spatial_image,
    is_volume_path,
)
from ibisagent.errors import IbisInputError


def is_scan_path(path: str | Path) -> bool:
    """A NIfTI file, a DICOM file or a folder (a DICOM series): what `load_volume` reads."""
    path = Path(path)
    return is_volume_path(path) or path.is_dir() or is_dicom_file(path)


def load_volume(
    path,
    modality: str = "unknown",
    allow_no_affine: bool = False,
    series_uid: str | None = None,
    max_bytes: int | None = MAX_VOLUME_BYTES,
) -> Volume:
    """A NIfTI file, a DICOM series folder, one DICOM file, or a nibabel image object -> Volume."""
    nib = _nib()
    if hasattr(path, "dataobj") and hasattr(path, "affine"):
        return from_spatial_image(path, "volume", modality, allow_no_affine)
    path = Path(path)
    if path.is_dir():
        return load_dicom_series(path, series_uid=series_uid, max_bytes=max_bytes)
    if not path.exists():
        raise IbisInputError(path, "no such file")
    if is_dicom_file(path):
        return load_dicom_series(path, series_uid=series_uid, max_bytes=max_bytes)
    if not is_volume_path(path):
        raise IbisInputError(path, "expected a NIfTI file (.nii, .nii.gz), a DICOM file or a DICOM series folder")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for corrupt or foreign files
        raise IbisInputError(path, f"cannot read NIfTI ({exc.__class__.__name__}: {exc})") from None
    check_nifti(img, path, max_bytes)
    return from_spatial_image(img, str(path), modality, allow_no_affine)


def load_label_map(source, like: Volume, allow_no_affine: bool = False) -> np.ndarray:
    """Integer label map (canonical view, same grid as `like`), from a file or nibabel image."""
    lab = load_volume(source, allow_no_affine=allow_no_affine)
    if lab.data.shape != like.data.shape:
        raise IbisInputError(
            lab.source, f"label map shape {lab.native_shape} differs from the image's {like.native_shape}"
        )
    if not np.allclose(lab.affine, like.affine, atol=1e-3):
        raise IbisInputError(lab.source, "label map affine differs from the image's (not on the same voxel grid)")
    data = lab.data
    if np.issubdtype(data.dtype, np.floating):
        step = max(1, data.size // 1_000_000)
        sample = data.reshape(-1)[::step]
        if not np.all(np.mod(sample, 1) == 0):
            raise IbisInputError(lab.source, "label map has non-integer values (a probability map?)")
    return data

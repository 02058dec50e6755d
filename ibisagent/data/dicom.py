"""A DICOM series folder (or one DICOM file, a series of one slice) -> `Volume` (pydicom), with
the checks a series needs.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on
row x column cosines), not by file name or InstanceNumber. The voxel grid is (column, row,
slice) with an affine built from ImagePositionPatient, ImageOrientationPatient and
PixelSpacing, converted from DICOM's LPS to NIfTI's RAS. Refused with a message: several series
in one folder (pick one by SeriesInstanceUID), missing slices (a gap larger than 1.5 x the usual
spacing), duplicate positions, slices of different sizes or orientations.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError

GAP_TOLERANCE = 1.5


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise IbisInputError("pydicom", "DICOM needs the volumes extra: pip install 'ibisagent[volumes]'") from None
    return pydicom


def is_dicom_file(path: str | Path) -> bool:
    """Whether `path` is a file that starts like DICOM (the "DICM" preamble, or a .dcm name)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def read_series_headers(folder: Path) -> dict[str, list]:
    """SeriesInstanceUID -> datasets (pixel data not decoded yet) of the DICOM files in `folder`
    (or of the one file `folder`)."""
    pydicom = _pydicom()
    series: dict[str, list] = defaultdict(list)
    files = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.is_file())
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception:  # not DICOM (a README, a DICOMDIR without pixels...): not part of a series
            continue
        if "PixelData" not in ds:
            continue
        ds.filename = str(f)
        series[str(ds.get("SeriesInstanceUID", "unknown"))].append(ds)
    return series


def load_dicom_series(folder: str | Path, series_uid: str | None = None, max_bytes: int | None = None):
    """A DICOM series -> Volume; `max_bytes` (default volume_io.MAX_VOLUME_BYTES) bounds the voxels
    as loaded, checked from the headers before any pixel data is decoded."""
    from ibisagent.data.volume_io import MAX_VOLUME_BYTES, Volume, _nib, check_voxel_bytes

    max_bytes = MAX_VOLUME_BYTES if max_bytes is None else max_bytes

    _nib()
    from nibabel.orientations import apply_orientation, io_orientation

    folder = Path(folder)
    if not folder.is_dir() and not folder.is_file():
        raise IbisInputError(folder, "no such file or folder (a DICOM series is a folder of .dcm files)")
    series = read_series_headers(folder)
    if not series:
        what = "not a DICOM image file" if folder.is_file() else "no DICOM image files in this folder"
        raise IbisInputError(folder, what)
    if series_uid is None and len(series) > 1:
        listing = ", ".join(f"{uid} ({len(v)} files)" for uid, v in series.items())
        raise IbisInputError(folder, f"{len(series)} series mixed in one folder: {listing}; pick one with --series UID")
    if series_uid is not None and series_uid not in series:
        raise IbisInputError(folder, f"no series with SeriesInstanceUID {series_uid}")
    slices = series[series_uid or next(iter(series))]
    first = slices[0]
    try:
        iop = np.array([float(v) for v in first.ImageOrientationPatient])
        spacing = [float(v) for v in first.PixelSpacing]
        positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    except (AttributeError, TypeError, ValueError):
        raise IbisInputError(folder, "slices lack ImagePositionPatient/ImageOrientationPatient/PixelSpacing") from None
    for ds in slices:
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], iop, atol=1e-4):
            raise IbisInputError(ds.filename, "slice orientation differs from the rest of the series")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise IbisInputError(
                ds.filename, f"slice is {ds.Columns} x {ds.Rows}, the series is {first.Columns} x {first.Rows}"
            )
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    order = np.argsort(positions @ normal)
    slices, positions = [slices[i] for i in order], positions[order]
    dist = positions @ normal
    if len(slices) > 1:
        steps = np.diff(dist)
        if np.any(steps < 1e-4):
            i = int(np.argmin(steps))
            raise IbisInputError(
                folder, f"two slices at the same position: {slices[i].filename}, {slices[i + 1].filename}"
            )
        usual = float(np.median(steps))
        gaps = np.flatnonzero(steps > GAP_TOLERANCE * usual)
        if gaps.size:
            i = int(gaps[0])
            missing = round(steps[i] / usual) - 1
            raise IbisInputError(
                folder,
                f"missing slices: about {missing} between {Path(slices[i].filename).name} and "
                f"{Path(slices[i + 1].filename).name} ({steps[i]:.2f} mm apart, usual spacing {usual:.2f} mm)",
            )
        step_vec = (positions[-1] - positions[0]) / (len(slices) - 1)
    else:
        step_vec = normal * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    slope = float(getattr(first, "RescaleSlope", 1) or 1)
    inter = float(getattr(first, "RescaleIntercept", 0) or 0)
    for ds in slices:
        if (
            float(getattr(ds, "RescaleSlope", 1) or 1) != slope
            or float(getattr(ds, "RescaleIntercept", 0) or 0) != inter
        ):
            raise IbisInputError(ds.filename, "rescale slope/intercept differ between slices; not supported")
    frames = int(getattr(first, "NumberOfFrames", 1) or 1) * int(getattr(first, "SamplesPerPixel", 1) or 1)
    check_voxel_bytes(folder, (len(slices) * frames, int(first.Rows), int(first.Columns)), 4, max_bytes)
    try:
        stack = np.stack([ds.pixel_array.T for ds in slices], axis=2)  # (column, row, slice)
    except Exception as exc:  # pydicom raises many types for unsupported transfer syntaxes
        raise IbisInputError(folder, f"cannot decode pixel data ({exc.__class__.__name__}: {exc})") from None
    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]
    lps[:3, 1] = col_cos * spacing[0]
    lps[:3, 2] = step_vec
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    modality = {"MR": "MRI", "CT": "CT", "PT": "PET", "US": "ultrasound"}.get(str(first.get("Modality", "")), "unknown")
    ornt = io_orientation(affine)
    return Volume(apply_orientation(stack, ornt), affine, None, ornt, str(folder), modality, slope, inter)

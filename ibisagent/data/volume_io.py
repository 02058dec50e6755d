"""3D volumes (NIfTI, DICOM series) as a stack of correctly oriented 2D slices, and back.

Voxels are held in the closest RAS+ orientation (axis 0 towards patient Right, 1 Anterior,
2 Superior) as a *view* of the stored array (no copy, stored dtype, scaling applied per slice).
A slice comes out as the radiological display a viewer shows (rows x columns):

- axial (axis 2):    top = anterior,  left of the image = patient right
- coronal (axis 1):  top = superior,  left of the image = patient right
- sagittal (axis 0): top = superior,  left of the image = anterior

i.e. display = canonical_plane.T[::-1, ::-1] for every axis. `Volume.native(...)` maps a
canonical-order array back to the stored voxel order, so a mask written with the input's affine
and header lies exactly over the original in 3D Slicer / ITK-SNAP.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
MAX_VOLUME_BYTES = 4 * 1024**3  # voxels as loaded (at least 4 bytes each); larger volumes are refused
GZIP_MAX_RATIO = 1032  # deflate expands at most about 1032:1, so a .nii.gz cannot hold more than this


class VolumeTooLarge(IbisInputError):
    """A volume whose voxels (read from its header, before any is loaded) exceed the byte limit."""


def check_voxel_bytes(source, shape, itemsize: int, max_bytes: int | None = MAX_VOLUME_BYTES) -> int:
    """Bytes the voxels of `shape` take once loaded (at least 4 a voxel), computed with Python
    integers (no overflow); a zero-size dimension or more than `max_bytes` is refused."""
    dims = [int(d) for d in shape]
    if not dims or any(d < 1 for d in dims):
        raise IbisInputError(source, f"the volume has a dimension of size 0 (shape {tuple(dims)})")
    need = max(4, int(itemsize))
    for d in dims:
        need *= d
    if max_bytes is not None and need > max_bytes:
        raise VolumeTooLarge(
            source, f"volume needs {need / 2**20:.0f} MiB once loaded, the limit is {max_bytes / 2**20:.0f} MiB"
        )
    return need


def check_nifti(img, path: Path, max_bytes: int | None = MAX_VOLUME_BYTES) -> int:
    """Check a NIfTI file's header against the file before any voxel is read: no zero-size
    dimension, voxel sizes finite and positive, voxel data the file can actually hold (its size
    after the data offset; times 1032 when gzipped) and within `max_bytes` once loaded (bytes)."""
    header = img.header
    shape = header.get_data_shape()
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    need = check_voxel_bytes(path, shape, itemsize, max_bytes)
    stored = need // max(4, itemsize) * itemsize
    size = path.stat().st_size
    offset = int(getattr(img.dataobj, "offset", 0) or 0)
    room = size * GZIP_MAX_RATIO if str(path).lower().endswith(".gz") else size - offset
    if stored > room:
        promised = f"the header promises {stored:,} bytes of voxels"
        raise IbisInputError(path, f"{promised} but the file holds at most {max(room, 0):,}: truncated")
    zooms = [float(z) for z in header.get_zooms()[:3]]
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise IbisInputError(path, f"voxel sizes {zooms} must be finite and positive")
    return need


def _nib():
    try:
        import nibabel
    except ImportError:
        raise IbisInputError("nibabel", "volumes need the volumes extra: pip install 'ibisagent[volumes]'") from None
    return nibabel


def axis_index(axis: str | int) -> int:
    if isinstance(axis, int) and axis in (0, 1, 2):
        return axis
    if axis not in AXES:
        raise IbisInputError(axis, f"unknown slice axis; choose one of {', '.join(AXES)}")
    return AXES[axis]


def is_volume_path(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@dataclass
class Volume:
    """A 3D scan. `data`: canonical RAS-ordered view (X, Y, Z) of the stored voxels, unscaled;
    intensity = data * slope + inter. `affine`/`header`: the input's, for writing masks back.
    `ornt`: nibabel orientation transform from stored order to canonical order."""

    data: np.ndarray
    affine: np.ndarray
    header: object | None
    ornt: np.ndarray
    source: str
    modality: str = "unknown"
    slope: float = 1.0
    inter: float = 0.0

    @property
    def native_shape(self) -> tuple[int, ...]:
        from nibabel.orientations import apply_orientation, ornt_transform

        inv = ornt_transform(_ras(), self.ornt)
        return apply_orientation(np.empty(self.data.shape, dtype=bool), inv).shape

    def n_slices(self, axis: str | int) -> int:
        return self.data.shape[axis_index(axis)]

    def plane(self, axis: str | int, k: int) -> np.ndarray:
        """Stored values of slice k (display orientation, stored dtype, a view)."""
        a = axis_index(axis)
        if not 0 <= k < self.data.shape[a]:
            raise IbisInputError(self.source, f"slice {k} outside 0..{self.data.shape[a] - 1} along {axis}")
        return display(self.data[plane_index(a, k)])

    def intensity(self, axis: str | int, k: int) -> np.ndarray:
        """H x W float32 intensities (e.g. HU for CT) of slice k in display orientation."""
        s = self.plane(axis, k).astype(np.float32)
        if self.slope != 1.0 or self.inter != 0.0:
            s = s * np.float32(self.slope) + np.float32(self.inter)
        return s

    def window_range(self, window: str = "auto") -> tuple[float, float]:
        """(low, high) in intensity units for a window name (see `windowing.resolve_window`);
        percentiles are taken on the stored values and scaled like the voxels."""
        from ibisagent.data.windowing import resolve_window

        low, high = resolve_window(self.data, window, self.modality)
        if window == "percentile" or (window == "auto" and not self.modality.upper().startswith("CT")):
            low, high = sorted((low * self.slope + self.inter, high * self.slope + self.inter))
        return low, high

    def native(self, canonical: np.ndarray) -> np.ndarray:
        """A canonical-order (X, Y, Z) array in the stored voxel order (a view)."""
        from nibabel.orientations import apply_orientation, ornt_transform

        return apply_orientation(canonical, ornt_transform(_ras(), self.ornt))


def plane_index(axis: int, k: int) -> tuple:
    """Index that picks plane k along `axis` as a view (np.take would copy the volume)."""
    return tuple(k if i == axis else slice(None) for i in range(3))


def display(plane: np.ndarray) -> np.ndarray:
    """Canonical 2D plane -> display orientation (rows, columns); a view."""
    return plane.T[::-1, ::-1]


def from_display(image2d: np.ndarray) -> np.ndarray:
    """Inverse of `display`."""
    return image2d[::-1, ::-1].T


def _ras() -> np.ndarray:
    from nibabel.orientations import axcodes2ornt

    return axcodes2ornt(("R", "A", "S"))


def from_spatial_image(img, source: str, modality: str = "unknown", allow_no_affine: bool = False) -> Volume:
    """Volume over a nibabel spatial image (NIfTI loaded from disk or built in memory)."""
    nib = _nib()
    from nibabel.orientations import apply_orientation, io_orientation

    header = img.header
    if isinstance(header, nib.Nifti1Header) and not allow_no_affine:
        if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
            raise IbisInputError(
                source,
                "NIfTI has no affine (qform_code = sform_code = 0), so left/right and orientation are "
                "unknown; fix the header, or allow it explicitly (allow_no_affine / --allow-no-affine)",
            )
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise IbisInputError(source, f"expected a 3D volume, got shape {tuple(img.shape)}")
    dataobj = img.dataobj
    if hasattr(dataobj, "get_unscaled"):
        try:
            raw = np.asanyarray(dataobj.get_unscaled())
        except (EOFError, OSError, ValueError, zlib.error) as exc:  # nibabel reads voxels lazily, here
            raise IbisInputError(source, f"corrupt or truncated voxel data ({exc.__class__.__name__})") from None
        slope = float(dataobj.slope) if np.isfinite(dataobj.slope) and dataobj.slope != 0 else 1.0
        inter = float(dataobj.inter) if np.isfinite(dataobj.inter) else 0.0
    else:
        raw, slope, inter = np.asanyarray(dataobj), 1.0, 0.0
    raw = raw.reshape(shape)
    if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool) or np.iscomplexobj(raw):
        raise IbisInputError(source, f"unsupported voxel type {raw.dtype}")
    affine = np.asarray(img.affine if img.affine is not None else np.eye(4), float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise IbisInputError(source, "the affine is singular or not finite; cannot orient the volume")
    ornt = io_orientation(affine)
    return Volume(apply_orientation(raw, ornt), affine, header, ornt, source, modality, slope, inter)

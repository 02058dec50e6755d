"""3D uploads (a NIfTI file, or one DICOM file) for the web app: slices to view and segment, and
the slice's mask back as NIfTI with the input's affine.

Reading, orientation, windowing and the NIfTI writer are the data layer's
(`ibisagent.data.volume_io`, `windowing`, `segment_volume`); this module only bounds memory and
adapts uploaded bytes. A slice comes out in radiological display orientation (rows x columns).
"""

from __future__ import annotations

import hashlib
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibisagent.app.errors import bad_request, too_large, unsupported
from ibisagent.app.store import BoundedLRU
from ibisagent.errors import IbisInputError


@dataclass(frozen=True)
class StoredVolume:
    id: str
    volume: object  # ibisagent.data.volume_io.Volume
    name: str


def load_volume_upload(data: bytes, name: str, kind: str, max_bytes: int):
    """Uploaded bytes (kind "nifti", "gzip" = .nii.gz, or "dicom") -> Volume; 400/413/415 on failure."""
    try:
        from ibisagent.data.scans import load_volume
        from ibisagent.data.volume_io import VolumeTooLarge
    except ImportError:
        raise unsupported(f"{name}: volumes need the volumes extra: pip install 'ibisagent[volumes]'") from None
    with tempfile.TemporaryDirectory(prefix="ibisagent-volume-") as tmp:
        try:
            if kind == "dicom":
                (Path(tmp) / "slice.dcm").write_bytes(data)
                return load_volume(Path(tmp), modality="unknown", max_bytes=max_bytes)
            if kind == "gzip":
                try:
                    head = zlib.decompressobj(wbits=31).decompress(data[:65536], 352)
                except zlib.error:
                    raise bad_request(f"{name}: corrupt gzip data") from None
                if len(head) < 348:
                    raise bad_request(f"{name}: corrupt or truncated gzip data")
                if head[344:348] not in (b"n+1\x00", b"ni1\x00", b"n+2\x00"):
                    raise unsupported(f"{name}: a gzip file that is not a NIfTI volume")
            path = Path(tmp) / ("volume.nii.gz" if kind == "gzip" else "volume.nii")
            path.write_bytes(data)
            try:  # the header is checked against the file and max_bytes before any voxel is read
                vol = load_volume(path, max_bytes=max_bytes)
                vol.data = np.ascontiguousarray(vol.data)  # load the voxels before the temp file goes
            except IbisInputError:
                raise
            except (EOFError, OSError, ValueError, zlib.error) as exc:  # nibabel reads voxels lazily
                raise bad_request(f"{name}: corrupt or truncated volume ({exc.__class__.__name__})") from None
            return vol
        except VolumeTooLarge as exc:
            raise too_large(f"{name}: {exc.problem}") from None
        except IbisInputError as exc:
            raise bad_request(f"{name}: {exc.problem}") from None


class VolumeStore:
    """Uploaded volumes by content hash, bounded by count and bytes (LRU)."""

    def __init__(self, max_entries: int, max_bytes: int):
        self._lru = BoundedLRU(max_entries, max_bytes)

    def add(self, volume, data: bytes, name: str) -> StoredVolume:
        item = StoredVolume(hashlib.blake2b(data, digest_size=16).hexdigest(), volume, name)
        self._lru.put(item.id, item, int(volume.data.nbytes))
        return item

    def get(self, volume_id: str) -> StoredVolume | None:
        return self._lru.get(volume_id)

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes


def slice_rgb(volume, axis: str, index: int, window: str) -> np.ndarray:
    """Slice `index` along `axis` (axial/coronal/sagittal), windowed to H x W x 3 uint8 (display orientation)."""
    from ibisagent.data.windowing import to_uint8

    low, high = _window(volume, window)
    grey = to_uint8(volume.intensity(axis, index), low, high)
    return np.repeat(grey[..., None], 3, axis=2)


def _window(volume, window: str) -> tuple[float, float]:
    from ibisagent.data.windowing import WINDOW_CHOICES

    if window not in WINDOW_CHOICES:
        raise bad_request(f"unknown window {window!r}; choose from {', '.join(WINDOW_CHOICES)}")
    return volume.window_range(window)


def slice_mask_nifti(volume, axis: str, index: int, mask: np.ndarray, window: str) -> bytes:
    """A .nii.gz (uint8, 1 = target) on the input's voxel grid and affine, with `mask` (H x W bool,
    display orientation) at slice `index` along `axis` and zeros elsewhere."""
    from ibisagent.data.segment_volume import segment_volume

    with tempfile.TemporaryDirectory(prefix="ibisagent-mask-") as tmp:
        out = Path(tmp) / "mask.nii.gz"
        segment_volume(volume, lambda _rgb: mask, out, axis=axis, slices=[index], window=window)
        return out.read_bytes()

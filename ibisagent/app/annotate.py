"""The annotator's routes of the web page (`ibisagent app`): its static files, a volume's raw
slice intensities (window/level and slice scrolling happen in the browser), a whole volume's mask
as NIfTI from many slices' masks, a DICOM series uploaded as several files, and the accepted
masks exported as a dataset (a zip holding images/, masks/ and a `pairs.csv` that `ibisagent
teach` and `ibisagent train tool` read; see ibisagent.data.pairs).

Everything here reuses the service's stores, limits and worker slots; `mount(app, service)` adds
the routes.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ibisagent.app.errors import bad_request, not_found, too_large, unsupported
from ibisagent.app.requests import read_request
from ibisagent.app.schemas import MaskIn

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
Axis = Literal["axial", "coronal", "sagittal"]
MAX_EXPORT_ITEMS = 2000
MAX_DICOM_FILES = 2000


class VolumeMasksRequest(BaseModel):
    """Masks of many slices along one axis -> one NIfTI mask of the whole volume."""

    model_config = ConfigDict(extra="forbid")
    axis: Axis = "axial"
    masks: dict[str, MaskIn] = Field(..., description="slice index (as a string) -> that slice's mask")


class WindowedSliceRequest(BaseModel):
    """A slice windowed to [low, high] intensities (the page's window/level), stored and embedded."""

    model_config = ConfigDict(extra="forbid")
    axis: Axis = "axial"
    index: int = Field(..., ge=0)
    low: float
    high: float


class ExportItem(BaseModel):
    """One accepted mask: on an uploaded image (image_id) or a volume's slice, with its structure."""

    model_config = ConfigDict(extra="forbid")
    image_id: str | None = Field(None, description="an uploaded image, or a slice's image")
    volume_id: str | None = Field(None, description="or a volume slice: volume_id, axis, index, window")
    axis: Axis = "axial"
    index: int | None = None
    window: str = "auto"
    low: float | None = Field(None, description="with high: the window as intensities (overrides `window`)")
    high: float | None = None
    mask: MaskIn
    structure: str = Field("target", min_length=1, max_length=100)
    modality: str = Field("", max_length=40)
    name: str = Field("image", max_length=200)


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ExportItem] = Field(..., min_length=1, max_length=MAX_EXPORT_ITEMS)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:80] or "image"


class Annotator:
    """The routes' work, on one service."""

    def __init__(self, service):
        self.service = service
        self._windows: dict[str, dict[str, list[float]]] = {}

    def _volume(self, volume_id: str):
        item = self.service.volumes.get(volume_id)
        if item is None:
            raise not_found(f"unknown or expired volume_id {volume_id[:64]!r}; upload the volume again")
        return item

    def windows(self, volume_id: str) -> dict[str, list[float]]:
        """Window name -> [low, high] intensities (computed once a volume)."""
        from ibisagent.data.windowing import WINDOW_CHOICES

        item = self._volume(volume_id)
        if volume_id not in self._windows:
            if len(self._windows) > 64:
                self._windows.clear()
            self._windows[volume_id] = {w: [float(v) for v in item.volume.window_range(w)] for w in WINDOW_CHOICES}
        return self._windows[volume_id]

    def info(self, volume_id: str) -> dict:
        from ibisagent.data.volume_io import AXES

        item = self._volume(volume_id)
        vol = item.volume
        zooms = [float(z) for z in np.sqrt((np.asarray(vol.affine)[:3, :3] ** 2).sum(axis=0))]
        # display aspect (height / width of a pixel) per axis: a plane shows the other two axes
        ras = _canonical_zooms(vol, zooms)
        aspect = {}
        for axis, a in AXES.items():
            cols, rows = [i for i in range(3) if i != a]
            aspect[axis] = ras[rows] / ras[cols] if ras[cols] > 0 else 1.0
        lo, hi = float(np.min(vol.data)), float(np.max(vol.data))
        lo, hi = sorted((lo * vol.slope + vol.inter, hi * vol.slope + vol.inter))
        return {
            "volume_id": item.id,
            "name": item.name,
            "slices": {axis: vol.n_slices(axis) for axis in AXES},
            "windows": self.windows(volume_id),
            "range": [lo, hi],
            "spacing": ras,
            "aspect": aspect,
            "modality": vol.modality,
        }

    def plane(self, volume_id: str, axis: str, index: int) -> tuple[bytes, tuple[int, int]]:
        """Slice `index` along `axis`: float32 intensities (little-endian), display orientation."""
        item = self._volume(volume_id)
        n = item.volume.n_slices(axis)
        if not 0 <= index < n:
            raise bad_request(f"slice {index} outside 0..{n - 1} along {axis}")
        s = np.ascontiguousarray(item.volume.intensity(axis, index), dtype="<f4")
        return s.tobytes(), s.shape

    def windowed_slice(self, volume_id: str, req: WindowedSliceRequest) -> dict:
        """Like POST /v1/volumes/{id}/slice, with the window given as [low, high] intensities."""
        item = self._volume(volume_id)
        k = self._index(item.volume, req.axis, req.index)
        rgb = _windowed_rgb(item.volume, req.axis, k, req.low, req.high)
        name = f"{Path(item.name).name.split('.')[0]}_{req.axis}{k:03d}"
        out = self.service._store(rgb, name)
        return {**out, "axis": req.axis, "index": k, "window": f"{req.low:g}..{req.high:g}"}

    @staticmethod
    def _index(vol, axis: str, index: int | None) -> int:
        n = vol.n_slices(axis)
        if index is None or not 0 <= index < n:
            raise bad_request(f"slice index outside 0..{n - 1} along {axis}")
        return index

    def volume_masks(self, volume_id: str, req: VolumeMasksRequest) -> bytes:
        """Many slices' masks -> the whole volume's mask as .nii.gz (input grid and affine)."""
        from ibisagent.app.codec import decode_mask
        from ibisagent.data.segment_volume import segment_volume

        item = self._volume(volume_id)
        vol = item.volume
        n = vol.n_slices(req.axis)
        masks = {}
        for key, value in req.masks.items():
            try:
                k = int(key)
            except ValueError:
                raise bad_request(f"masks: slice index {key[:20]!r} is not an integer") from None
            if not 0 <= k < n:
                raise bad_request(f"masks: slice {k} outside 0..{n - 1} along {req.axis}")
            shape = vol.plane(req.axis, k).shape
            masks[k] = decode_mask(value, shape, f"mask of slice {k}", self.service.config.max_pixels)
        if not masks:
            raise bad_request("no slice masks to save")
        order = sorted(masks)
        it = iter(order)
        with tempfile.TemporaryDirectory(prefix="ibisagent-mask-") as tmp:
            out = Path(tmp) / "mask.nii.gz"
            segment_volume(vol, lambda _rgb: masks[next(it)], out, axis=req.axis, slices=order)
            return out.read_bytes()

    def dicom_series(self, files: list[tuple[str, bytes]]) -> dict:
        """Several DICOM files of one series -> a stored volume (as POST /v1/volumes answers)."""
        from ibisagent.app.codec import sniff
        from ibisagent.app.volumes import load_volume_upload

        if not files:
            raise bad_request("no DICOM files in the upload")
        for name, data in files:
            if sniff(data) != "dicom":
                raise unsupported(f"{name}: not a DICOM file; upload a folder's .dcm files, or one NIfTI file")
        if len(files) == 1:
            name, data = files[0]
            vol = load_volume_upload(data, name, "dicom", self.service.config.max_volume_bytes)
            return self.service.store_volume(vol, data, name)
        try:
            from ibisagent.data.scans import load_volume
            from ibisagent.data.volume_io import VolumeTooLarge
        except ImportError:
            raise unsupported("volumes need the volumes extra: pip install 'ibisagent[volumes]'") from None
        from ibisagent.errors import IbisInputError

        with tempfile.TemporaryDirectory(prefix="ibisagent-dicom-") as tmp:
            for i, (_name, data) in enumerate(files):
                (Path(tmp) / f"{i:05d}.dcm").write_bytes(data)
            try:
                vol = load_volume(Path(tmp), modality="unknown", max_bytes=self.service.config.max_volume_bytes)
            except VolumeTooLarge as exc:
                raise too_large(f"DICOM series: {exc.problem}") from None
            except IbisInputError as exc:
                problem = exc.problem.replace("pick one with --series UID", "upload one series' files at a time")
                raise bad_request(f"DICOM folder ({len(files)} files): {problem}") from None
            vol.data = np.ascontiguousarray(vol.data)
        joined = b"".join(sorted(data for _, data in files))
        return self.service.store_volume(vol, joined, f"{Path(files[0][0]).stem}_series.dcm")

    def export(self, req: ExportRequest) -> bytes:
        """Accepted masks -> a zip of images/*.png, masks/*.png and pairs.csv (image,mask,structure,modality)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=4) as zf:
            self.write_dataset(req.items, zf.writestr)
        return buf.getvalue()

    def write_dataset(self, items: list[ExportItem], put) -> dict[str, str]:
        """The items as a pairs dataset: `put(path, bytes)` gets images/*.png, masks/*.png and
        pairs.csv (image,mask,structure,modality; paths relative to it). Different images never
        share a file name. -> mask path -> "items[i]" (to name an item in messages). Every item's
        image or volume is looked up first (`_sources`), so ids the server no longer holds are
        named all at once, before anything is written."""
        from PIL import Image

        from ibisagent.app.codec import decode_mask

        sources = self._sources(items)
        rows, owners, origin = [], {}, {}
        for i, it in enumerate(items):
            rgb, base, modality, identity = self._item_image(i, it, sources)
            stem, n = base, 1
            while owners.get(stem, identity) != identity:  # another image under this name
                n += 1
                stem = f"{base}_{n}"
            mask = decode_mask(it.mask, rgb.shape[:2], f"items[{i}].mask", self.service.config.max_pixels)
            image_path = f"images/{stem}.png"
            if stem not in owners:
                owners[stem] = identity
                put(image_path, _png(Image.fromarray(rgb)))
            mask_path = f"masks/{stem}__{_safe(it.structure)}_{i:04d}.png"
            put(mask_path, _png(Image.fromarray(mask.astype(np.uint8) * 255)))
            rows.append([image_path, mask_path, it.structure, modality or ""])
            origin[mask_path] = f"items[{i}]"
        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(["image", "mask", "structure", "modality"])
        w.writerows(rows)
        put("pairs.csv", text.getvalue())
        return origin

    def _sources(self, items: list[ExportItem]) -> dict[tuple[str, str], object]:
        """("image" | "volume", id) -> the stored image or volume of every item (held here, so a
        later eviction cannot take one away mid-request), or one 404 naming each id the server no
        longer holds (never uploaded, or evicted by newer uploads) and its items: the client
        uploads those again (the same pixels or file get the same id) and resends."""
        found: dict[tuple[str, str], object] = {}
        gone: dict[tuple[str, str], list[int]] = {}
        for i, it in enumerate(items):
            key = ("volume", it.volume_id) if it.volume_id else ("image", it.image_id) if it.image_id else None
            if key is None or key in found:
                continue
            store = self.service.volumes if key[0] == "volume" else self.service.images
            item = None if key in gone else store.get(key[1])
            if item is None:
                gone.setdefault(key, []).append(i)
            else:
                found[key] = item
        if gone:
            kinds = sorted({kind for kind, _ in gone})
            named = "; ".join(
                f"{kind}_id {ident[:64]!r} ({_items(at)})" for (kind, ident), at in list(gone.items())[:8]
            )
            more = f"; {len(gone) - 8} more" if len(gone) > 8 else ""
            again = ", ".join({"image": "POST /v1/images", "volume": "POST /v1/volumes"}[k] for k in kinds)
            raise not_found(
                f"{len(gone)} {' and '.join(kinds)} id(s) unknown or expired: {named}{more}; the server keeps only "
                f"its most recent uploads: upload them again ({again}; the same file gets the same id) and resend"
            )
        return found

    def _item_image(self, i: int, it: ExportItem, sources: dict) -> tuple[np.ndarray, str, str, tuple]:
        """An export item's image as (RGB, file stem, modality, identity: equal for the same pixels),
        from its looked-up `sources`."""
        from ibisagent.app.volumes import slice_rgb

        if it.volume_id:
            vol = sources[("volume", it.volume_id)]
            n = vol.volume.n_slices(it.axis)
            if it.index is None or not 0 <= it.index < n:
                raise bad_request(f"items[{i}]: slice index outside 0..{n - 1} along {it.axis}")
            if it.low is not None and it.high is not None:
                rgb, window = _windowed_rgb(vol.volume, it.axis, it.index, it.low, it.high), f"{it.low}..{it.high}"
            else:
                rgb, window = slice_rgb(vol.volume, it.axis, it.index, it.window), it.window
            stem = f"{_safe(Path(vol.name).name.split('.')[0])}_{it.axis}{it.index:03d}"
            return rgb, stem, it.modality or vol.volume.modality, (vol.id, it.axis, it.index, window)
        if it.image_id:
            img = sources[("image", it.image_id)]
            return img.image, _safe(Path(it.name or img.name).stem), it.modality, (img.id,)
        raise bad_request(f"items[{i}]: give image_id, or volume_id with axis and index")


def _items(at: list[int], most: int = 5) -> str:
    """Item indices as "items[0], items[3]" (the first `most`, then how many more)."""
    named = ", ".join(f"items[{i}]" for i in at[:most])
    return named + (f" and {len(at) - most} more" if len(at) > most else "")


def _windowed_rgb(volume, axis: str, index: int, low: float, high: float) -> np.ndarray:
    from ibisagent.data.windowing import to_uint8

    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise bad_request("window: low and high must be finite numbers with low < high")
    grey = to_uint8(volume.intensity(axis, index), low, high)
    return np.repeat(grey[..., None], 3, axis=2)


def _canonical_zooms(vol, zooms: list[float]) -> list[float]:
    """Voxel sizes in canonical (RAS) order: the stored axes permuted like `vol.ornt`."""
    out = [1.0, 1.0, 1.0]
    for stored, (canon, _flip) in enumerate(np.asarray(vol.ornt)):
        if 0 <= int(canon) < 3 and stored < len(zooms):
            out[int(canon)] = zooms[stored]
    return out


def _png(img) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def mount(app: FastAPI, service) -> Annotator:
    """Add the annotator's routes to the app."""
    ann = Annotator(service)

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        if name not in STATIC_FILES:
            raise not_found(f"no static file {name[:64]!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"cache-control": "no-cache"})

    @app.get("/v1/annotate/volumes/{volume_id}")
    async def volume_info(volume_id: str) -> dict:
        """A volume's slice counts, window presets as [low, high], intensity range and pixel aspect per axis."""
        return await service.slots.run(ann.info, volume_id)

    @app.get("/v1/annotate/volumes/{volume_id}/plane")
    async def volume_plane(volume_id: str, axis: Axis = "axial", index: int = 0) -> Response:
        """One slice's intensities: float32 little-endian, rows x columns (header x-shape: "H,W")."""
        data, (H, W) = await service.slots.run(ann.plane, volume_id, axis, index)
        return Response(data, media_type="application/octet-stream", headers={"x-shape": f"{H},{W}"})

    @app.post("/v1/annotate/volumes/{volume_id}/slice")
    async def windowed_slice(volume_id: str, request: Request) -> dict:
        """A slice windowed to the page's window/level ([low, high]), stored and embedded like an image."""
        req, _ = await read_request(request, WindowedSliceRequest, ())
        return await service.slots.run(ann.windowed_slice, volume_id, req)

    @app.post("/v1/annotate/volumes/{volume_id}/masks")
    async def volume_masks(volume_id: str, request: Request) -> Response:
        """Masks of many slices (one axis) -> the whole volume's mask, .nii.gz on the input's grid and affine."""
        req, _ = await read_request(request, VolumeMasksRequest, ())
        data = await service.slots.run(ann.volume_masks, volume_id, req)
        disposition = f'attachment; filename="mask_{req.axis}.nii.gz"'
        return Response(data, media_type="application/gzip", headers={"content-disposition": disposition})

    @app.post("/v1/annotate/dicom")
    async def dicom_upload(request: Request) -> dict:
        """A DICOM series as several files (multipart, each field `files`) -> a volume like POST /v1/volumes."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            raise unsupported("send multipart/form-data with the series' files as `files`")
        try:
            form = await request.form(max_files=MAX_DICOM_FILES, max_fields=8)
        except Exception as exc:
            raise bad_request(f"malformed multipart body ({getattr(exc, 'detail', exc)})") from None
        files = [(Path(v.filename or "file").name, await v.read()) for k, v in form.multi_items() if hasattr(v, "read")]
        return await service.slots.run(ann.dicom_series, files)

    @app.post("/v1/annotate/export")
    async def export(request: Request) -> Response:
        """Accepted masks -> a dataset zip (images/, masks/, pairs.csv) for `ibisagent teach` / `train tool`."""
        req, _ = await read_request(request, ExportRequest, ())
        data = await service.slots.run(ann.export, req)
        disposition = 'attachment; filename="annotations.zip"'
        return Response(data, media_type="application/zip", headers={"content-disposition": disposition})

    return ann

"""Bytes in, arrays out (and back): uploaded images and masks, PNG/JPEG/RLE encodings.

Images decode to H x W x 3 uint8 RGB and masks to H x W bool through the project's loaders
(`ibisagent.io.images`), so an upload behaves exactly like the same file given to the CLI.
The file type is sniffed from the first bytes, not trusted from the file name or content type.
"""

from __future__ import annotations

import base64
import binascii
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ibisagent.app.errors import bad_request, too_large, unsupported
from ibisagent.errors import IbisInputError

IMAGE_KINDS = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "bmp": ".bmp"}
VOLUME_NOTE = "a DICOM or NIfTI volume: upload it to POST /v1/volumes, then pick a slice"
VOLUME_KINDS = ("dicom", "nifti", "gzip")


def sniff(data: bytes) -> str | None:
    """The file kind from its magic bytes: png, jpeg, tiff, bmp, dicom, nifti, gzip, or None."""
    if data[128:132] == b"DICM":  # first: the 128-byte preamble may itself look like a TIFF header
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data.startswith(b"BM"):
        return "bmp"
    if data[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00"):
        return "nifti"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    return None


def _check_kind(data: bytes, what: str) -> str:
    if not data:
        raise bad_request(f"{what}: empty upload")
    kind = sniff(data)
    if kind in ("dicom", "nifti", "gzip"):
        raise unsupported(f"{what}: {VOLUME_NOTE}")
    if kind not in IMAGE_KINDS:
        raise unsupported(f"{what}: not a PNG, JPEG, TIFF or BMP image")
    return kind


def _check_pixels(data: bytes, what: str, max_pixels: int) -> None:
    """Refuse images larger than `max_pixels` from the header, before decoding any pixel data."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise too_large(f"{what}: image has too many pixels (limit {max_pixels:,})") from None
    except Exception as exc:  # PIL raises many types for damaged headers
        raise bad_request(f"{what}: corrupt or unreadable image ({exc.__class__.__name__})") from None
    if w * h > max_pixels:
        raise too_large(f"{what}: image is {w} x {h} = {w * h:,} pixels, the limit is {max_pixels:,}")


def _load_via_file(data: bytes, kind: str, what: str, loader):
    """Run a path-based loader of `ibisagent.io.images` on the bytes; its errors become 400s."""
    with tempfile.TemporaryDirectory(prefix="ibisagent-upload-") as tmp:
        path = Path(tmp) / f"upload{IMAGE_KINDS[kind]}"
        path.write_bytes(data)
        try:
            return loader(path)
        except IbisInputError as exc:
            raise bad_request(f"{what}: {exc.problem}") from None


def decode_image(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    """Uploaded image bytes -> H x W x 3 uint8 RGB (8/16-bit, grey/RGB/RGBA all accepted)."""
    from ibisagent.io.images import load_image

    kind = _check_kind(data, what)
    _check_pixels(data, what, max_pixels)
    return _load_via_file(data, kind, what, load_image)


def decode_mask(value: bytes | str | dict, shape: tuple[int, int], what: str, max_pixels: int) -> np.ndarray:
    """A mask given as PNG/TIFF bytes, a base64 string of them (data URL accepted), or RLE
    {"size": [H, W], "counts": [...]} (see ibisagent.io.rle) -> H x W bool; must match `shape` (H, W)."""
    from ibisagent.io.images import load_mask

    if isinstance(value, dict):
        return decode_rle(value, shape, what)
    if isinstance(value, str):
        value = b64_bytes(value, what)
    kind = _check_kind(value, what)
    _check_pixels(value, what, max_pixels)
    return _load_via_file(value, kind, what, lambda p: load_mask(p, shape=shape))


def decode_rle(rle: dict, shape: tuple[int, int], what: str) -> np.ndarray:
    """RLE dict -> H x W bool, checked against `shape` (H, W) before anything is allocated."""
    from ibisagent.io.rle import rle_decode

    try:
        return rle_decode(rle, shape=shape)
    except IbisInputError as exc:
        raise bad_request(f"{what}: RLE {exc.problem}") from None


def b64_bytes(text: str, what: str) -> bytes:
    """Base64 (or a data: URL holding base64) -> bytes."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{what}: not valid base64") from None


def png_b64(array: np.ndarray) -> str:
    """H x W (bool or uint8) or H x W x 3 uint8 -> base64 PNG. Bool masks become 0/255."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode()


def jpeg_b64(image: np.ndarray, quality: int = 90) -> str:
    """H x W x 3 uint8 -> base64 JPEG (for display: 30x faster to encode than PNG at 1024 px)."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode()


def mask_out(mask: np.ndarray, outputs, image: np.ndarray | None = None, clicks=None) -> dict:
    """The response's mask: area plus the encodings asked for (rle, png, overlay)."""
    from ibisagent.io.rle import rle_encode
    from ibisagent.overlay import render_overlay

    out: dict[str, Any] = {"area": int(np.count_nonzero(mask))}
    if "rle" in outputs:
        out["rle"] = rle_encode(mask)
    if "png" in outputs:
        out["png"] = png_b64(mask)
    if "overlay" in outputs and image is not None:
        out["overlay"] = jpeg_b64(render_overlay(image, mask, clicks=clicks, contour=True))
    return out


def step_out(rec, area: int) -> dict:
    """A StepRecord as the API shows it (schemas.StepOut, without the overlay)."""
    from ibisagent.env.protocol import parse_response

    return {
        "index": rec.index,
        "kind": rec.kind,
        "click": rec.click,
        "reasoning": parse_response(rec.response).think if rec.response else None,
        "answer": rec.answer,
        "error": rec.error,
        "iou": rec.iou,
        "score": rec.score,
        "area": area,
    }

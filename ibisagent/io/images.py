"""Image and mask files.

Images come back as H x W x 3 uint8 RGB arrays whatever was on disk (8/16-bit, float,
grayscale, RGBA, palette); masks as H x W bool arrays (True = target). Every failure is an
`IbisInputError` naming the file. Writes go to a temporary file that is renamed into place, so
a crash never leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ibisagent.errors import IbisInputError

MAX_PIXELS = 80_000_000  # a 2D slice larger than this is almost surely not what the user meant

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def read_array(path: str | Path) -> np.ndarray:
    """The raw pixel array of an image file (or .npy) as stored: H x W or H x W x C, any dtype
    (palette images expanded, 16-bit kept). `load_image` / `load_mask` normalise it."""
    path = Path(path)
    if not path.exists():
        raise IbisInputError(path, "no such file")
    if path.is_dir():
        raise IbisInputError(path, "is a directory, expected an image file")
    if not path.is_file():  # a FIFO, a socket or a device would block or never end
        raise IbisInputError(path, "not a regular file")
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith((".npy",)):
        try:
            header = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
            _check_pixels(path, header.shape[:2] if header.ndim >= 2 else (1, header.size))
            if header.size > 4 * MAX_PIXELS:  # at most 4 channels
                raise IbisInputError(path, f"array of shape {header.shape} is larger than an image can be")
            return np.array(header)
        except IbisInputError:
            raise
        except Exception as exc:  # numpy raises many types for bad files
            raise IbisInputError(path, f"cannot read .npy ({exc.__class__.__name__})") from None
    try:
        with Image.open(path) as im:
            w, h = im.size  # from the header: refuse before decoding
            _check_pixels(path, (h, w))
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("L" if im.mode == "1" else "RGB")
            elif im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                im = im.convert("I")
            arr = np.asarray(im)
    except UnidentifiedImageError:
        raise IbisInputError(path, "not an image file this tool can read (or the file is corrupt)") from None
    except Image.DecompressionBombError:
        raise IbisInputError(path, f"image larger than {MAX_PIXELS:,} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise IbisInputError(path, f"corrupt or truncated image ({exc})") from None
    return arr


def _check_pixels(path: Path, hw: tuple[int, int]) -> None:
    """Refuse an image of more than MAX_PIXELS (H x W from its header, Python ints)."""
    h, w = (int(v) for v in hw)
    if h * w > MAX_PIXELS:
        raise IbisInputError(path, f"image is {w} x {h} = {h * w:,} pixels, the limit is {MAX_PIXELS:,}")


def to_rgb_uint8(arr: np.ndarray, what: object = "image") -> np.ndarray:
    """Any 2D/3D numeric array to H x W x 3 uint8.

    Integer images wider than 8 bits and float images are min-max scaled per image (the
    contrast a viewer would show); RGBA loses alpha; grayscale is repeated over 3 channels.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # channels-first arrays (C x H x W)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise IbisInputError(what, f"expected a 2D image (H x W, H x W x 3 or 4), got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise IbisInputError(what, f"image is too small ({arr.shape[1]} x {arr.shape[0]} pixels)")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise IbisInputError(what, f"unsupported pixel type {arr.dtype}")
        a = arr.astype(np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            raise IbisInputError(what, "image has no finite pixel values")
        lo, hi = float(a[finite].min()), float(a[finite].max())
        a = np.where(finite, a, lo)
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        arr = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB."""
    return to_rgb_uint8(read_array(path), what=path)


def load_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask file (PNG/JPG/TIFF/BMP/.npy) as H x W bool by `mask_from_array`'s rules; errors
    name the file. `shape` (H, W), when given, must match: a mask of another size is an error, not
    resized."""
    return mask_from_array(read_array(path), what=path, shape=shape)


# The one rule for binary masks, from a file (`load_mask`) or from an array (uploads, datasets).
# Accepted encodings: bool, 0/1, 0/255, or any {0, v} pair; RGB(A) masks use the channel maximum.
# Lossy (JPEG) masks whose pixels sit almost all near 0 and 255 are thresholded at 127. Anything
# else (three or more distinct values) is a label map and is refused with a message, never silently
# thresholded: give one binary mask per target, or a label map with a value->name map
# (`ibisagent.data.volumes`).
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


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Save an H x W (x 3) uint8 array as PNG, atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Save an H x W bool mask as an 8-bit PNG (0 / 255), atomically."""
    save_png(path, np.asarray(mask, dtype=bool).astype(np.uint8) * 255)

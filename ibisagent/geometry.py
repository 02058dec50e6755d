"""Pixel <-> normalised click coordinates: the one conversion every layer uses.

Pixels are (x, y) = (column, row), integers, origin at the top-left pixel. Normalised coordinates
are what the released protocol writes: x = column / W, y = row / H, in [0, 1]. A pixel is sent as
its centre, ((x + 0.5) / W, (y + 0.5) / H), which maps back to the same pixel via int(x * W).
"""

from __future__ import annotations

from ibisagent.errors import IbisInputError


def pixel_to_norm(x: int, y: int, width: int, height: int) -> tuple[float, float]:
    """Pixel (column, row) -> its centre, normalised; maps back to the same pixel by `norm_to_pixel`."""
    return (x + 0.5) / width, (y + 0.5) / height


def norm_to_pixel(x: float, y: float, width: int, height: int, clip: bool = True) -> tuple[int, int]:
    """Normalised (x, y) -> pixel (int(x * W), int(y * H)), as released; clipped to the image unless
    `clip` is False (then a point outside [0, 1) lands outside the image, e.g. for a reward that
    penalises it)."""
    px, py = int(x * width), int(y * height)
    if clip:
        px, py = min(max(px, 0), width - 1), min(max(py, 0), height - 1)
    return px, py


def to_pixels(points: list[tuple[float, float]], width: int, height: int, coords: str) -> list[tuple[float, float]]:
    """A person's clicks -> pixels, checked against the image. `coords`: "norm" ([0, 1]), "px"
    (pixels), or "auto" (normalised when every value is in [0, 1]). Out-of-image clicks raise
    IbisInputError with the offending click."""
    if coords not in ("auto", "norm", "px"):
        raise IbisInputError(coords, "coordinates are auto, norm or px")
    if coords == "auto":
        coords = "norm" if all(0 <= v <= 1 for p in points for v in p) else "px"
    out = []
    for x, y in points:
        if coords == "norm":
            if not (0 <= x <= 1 and 0 <= y <= 1):
                raise IbisInputError(f"{x},{y}", "normalised coordinates must be in [0, 1]")
            out.append(norm_to_pixel(x, y, width, height))
        else:
            if not (0 <= x < width and 0 <= y < height):
                raise IbisInputError(f"{x},{y}", f"pixel click outside the {width} x {height} image")
            out.append((x, y))
    return out

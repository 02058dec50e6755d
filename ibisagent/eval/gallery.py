"""Best and worst episodes of a run as pictures: prediction beside reference, with the reasoning.

The prediction panel is the one overlay renderer's output (mask in green, outline, clicks as dots);
the reference panel draws the reference mask in red. Panels are scaled to `height` pixels.
"""

from __future__ import annotations

import io

import numpy as np

from ibisagent.io.rle import rle_decode
from ibisagent.overlay import render_overlay

REFERENCE_COLOR = (220, 40, 40)


def pick(rows: list[dict], n: int = 4) -> tuple[list[dict], list[dict]]:
    """(best n, worst n) finished rows by final IoU; ties broken by key, so the pick is stable."""
    ok = sorted((r for r in rows if not r.get("error")), key=lambda r: (-r["iou"], r["key"]))
    best = ok[:n]
    worst = [r for r in reversed(ok[-n:]) if r not in best] if len(ok) > n else []
    return best, worst


def _resize(img: np.ndarray, height: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def episode_panel(image: np.ndarray, row: dict, gt: np.ndarray | None, height: int = 220) -> bytes:
    """PNG bytes: [prediction overlay | reference overlay] for one result row (H x W x 3 image)."""
    from PIL import Image

    pred = rle_decode(row["final_mask"])
    left = render_overlay(image, pred, clicks=[tuple(c) for c in row["clicks"]], contour=True)
    panels = [_resize(left, height)]
    if gt is not None:
        panels.append(_resize(render_overlay(image, gt, color=REFERENCE_COLOR, contour=True), height))
    gap = np.full((height, 6, 3), 255, np.uint8)
    strip = panels[0] if len(panels) == 1 else np.concatenate([panels[0], gap, panels[1]], axis=1)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def gallery(rows: list[dict], samples_by_key: dict, n: int = 4) -> list[tuple[str, dict, bytes | None, str]]:
    """[(section "best"/"worst", row, PNG bytes or None, note)] for a policy's rows. The note says
    why a picture is missing (the image cannot be loaded any more)."""
    best, worst = pick(rows, n)
    out = []
    for section, chosen in (("best", best), ("worst", worst)):
        for r in chosen:
            sample = samples_by_key.get(r["key"])
            if sample is None:
                out.append((section, r, None, "sample not in the dataset any more"))
                continue
            try:
                image, gt = sample.load()
                out.append((section, r, episode_panel(image, r, gt), ""))
            except Exception as exc:  # a moved or unreadable file must not stop the report
                out.append((section, r, None, f"image unavailable ({exc})"))
    return out

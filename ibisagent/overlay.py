"""The one overlay renderer: the mask drawn semi-transparently over the image.

Defaults match the released inference code (colour (34, 139, 34), alpha 0.4, only mask pixels
blended), which is what the released weights saw. Training and inference must use the same
settings; `clicks` markers are for people only and are off for the agent's observation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OVERLAY_COLOR = (34, 139, 34)
OVERLAY_ALPHA = 0.4


def render_overlay(
    image: np.ndarray,
    mask: np.ndarray | None,
    color: Sequence[int] = OVERLAY_COLOR,
    alpha: float = OVERLAY_ALPHA,
    clicks: Sequence[tuple[float, float, int]] | None = None,
    contour: bool = False,
) -> np.ndarray:
    """H x W x 3 uint8 image with `mask` (H x W bool) blended in `color` at `alpha`.

    clicks: optional (x, y, label) in pixels (label 1 positive, drawn green-ringed white dot;
    0 negative, red). contour: also draw the mask outline (for people).
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    if mask is not None and np.any(mask):
        m = np.asarray(mask, bool)
        blend = out[m].astype(np.float32) * (1 - alpha) + np.asarray(color, np.float32) * alpha
        out[m] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
        if contour:
            import cv2

            cnts, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, cnts, -1, (255, 255, 0), max(1, round(max(out.shape[:2]) / 400)))
    if clicks:
        import cv2

        r = max(3, round(max(out.shape[:2]) / 100))
        for x, y, label in clicks:
            c = (0, 220, 0) if label == 1 else (230, 0, 0)
            cv2.circle(out, (int(x), int(y)), r + 2, (255, 255, 255), -1, lineType=cv2.LINE_AA)
            cv2.circle(out, (int(x), int(y)), r, c, -1, lineType=cv2.LINE_AA)
    return out

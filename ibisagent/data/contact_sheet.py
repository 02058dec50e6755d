"""A contact sheet: a grid of samples with their masks drawn, for a person to look at."""

from __future__ import annotations

import random
from collections import defaultdict

import cv2
import numpy as np

from ibisagent.data.pairs import Sample
from ibisagent.errors import IbisInputError
from ibisagent.overlay import render_overlay


def pick_spread(samples: list[Sample], n: int, seed: int = 0) -> list[Sample]:
    """Up to n samples, round-robin over (modality, structure) groups so every kind shows."""
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.modality, s.structure)].append(s)
    rng = random.Random(seed)
    queues = [rng.sample(v, len(v)) for _, v in sorted(groups.items())]
    rng.shuffle(queues)
    out = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size, 3), np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def contact_sheet(samples: list[Sample], n: int = 24, cols: int = 6, tile: int = 200, seed: int = 0) -> np.ndarray:
    """H x W x 3 uint8 grid of up to n samples (mask outlined, caption: structure / modality;
    negatives captioned "absent"). Samples that fail to load are left out."""
    cells = []
    for s in pick_spread(samples, n, seed):
        try:
            image, mask = s.load()
        except IbisInputError:
            continue
        t = _tile(render_overlay(image, mask, contour=True), tile)
        caption = f"{s.structure}{' (absent)' if s.negative else ''}"[:30]
        sub = f"{s.modality} {s.frame}".strip()[:32]
        cv2.rectangle(t, (0, tile - 30), (tile, tile), (0, 0, 0), -1)
        cv2.putText(t, caption, (4, tile - 17), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(t, sub, (4, tile - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (200, 200, 200), 1, cv2.LINE_AA)
        cells.append(t)
    if not cells:
        raise IbisInputError("contact sheet", "no sample could be loaded")
    rows = -(-len(cells) // cols)
    sheet = np.full((rows * (tile + 4) + 4, min(cols, len(cells)) * (tile + 4) + 4, 3), 40, np.uint8)
    for i, c in enumerate(cells):
        r, k = divmod(i, cols)
        sheet[4 + r * (tile + 4) : 4 + r * (tile + 4) + tile, 4 + k * (tile + 4) : 4 + k * (tile + 4) + tile] = c
    return sheet

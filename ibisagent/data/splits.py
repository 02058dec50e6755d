"""Deterministic train / held-out splits by image, so no image is on both sides."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ibisagent.data.pairs import Sample


def image_bucket(sample: Sample) -> int:
    """0..99, stable across machines: a hash of the dataset folder and the image file name."""
    key = f"{sample.origin}/{sample.image.name}".encode()
    return int.from_bytes(hashlib.sha1(key).digest()[:4], "big") % 100


def split_by_image(samples: Iterable[Sample], heldout_percent: int = 15) -> tuple[list[Sample], list[Sample]]:
    """(train, heldout): every target of one image lands on the same side."""
    train, held = [], []
    for s in samples:
        (held if image_bucket(s) < heldout_percent else train).append(s)
    return train, held

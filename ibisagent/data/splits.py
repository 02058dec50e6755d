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


def validation_split(train: Iterable[Sample], heldout_percent: int = 15, val_percent: int = 10):
    """(fit, val) of the *training* samples of `split_by_image(..., heldout_percent)`: images in
    hash buckets [heldout_percent, heldout_percent + val_percent) are the validation images, for
    choices that must not be tuned on the held-out split."""
    fit, val = [], []
    for s in train:
        (val if image_bucket(s) < heldout_percent + val_percent else fit).append(s)
    return fit, val

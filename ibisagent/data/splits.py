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


SPLITS = ("all", "train", "heldout")


def take_split(samples: Iterable[Sample], split: str = "all", heldout_percent: int = 15) -> list[Sample]:
    """The samples of one side of `split_by_image` ("train" or "heldout"), or all of them ("all").
    The same split as `train compact`, `train tool` and `eval heldout`."""
    if split not in SPLITS:
        from ibisagent.errors import IbisInputError

        raise IbisInputError("--split", f"expected one of {', '.join(SPLITS)}, got {split!r}")
    samples = list(samples)
    if split == "all":
        return samples
    train, held = split_by_image(samples, heldout_percent)
    return train if split == "train" else held


def validation_split(train: Iterable[Sample], heldout_percent: int = 15, val_percent: int = 10):
    """(fit, val) of the *training* samples of `split_by_image(..., heldout_percent)`: images in
    hash buckets [heldout_percent, heldout_percent + val_percent) are the validation images, for
    choices that must not be tuned on the held-out split."""
    fit, val = [], []
    for s in train:
        (val if image_bucket(s) < heldout_percent + val_percent else fit).append(s)
    return fit, val

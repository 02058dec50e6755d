"""Episode records: what happened in one run of the MDP, serialisable to JSON and back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ibisagent.io.rle import rle_decode, rle_encode


@dataclass
class StepRecord:
    """One step: the policy's raw text, the parsed action, and the resulting state.

    click: (x, y, label) in pixels (label 1 positive, 0 negative), None for a stop/invalid turn.
    mask: RLE of the mask after the step. iou: vs the reference mask, None when unknown.
    """

    index: int
    response: str
    kind: str
    click: tuple[int, int, int] | None = None
    mask: dict | None = None
    iou: float | None = None
    score: float | None = None
    reward: float = 0.0
    error: str | None = None
    answer: str | None = None
    policy_s: float = 0.0
    tool_s: float = 0.0


@dataclass
class Episode:
    query: str
    image_size: tuple[int, int]  # (H, W)
    image: str | None = None  # path or identifier of the image, when known
    init_mask: dict | None = None
    steps: list[StepRecord] = field(default_factory=list)
    stop_reason: str | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def final_mask(self) -> np.ndarray:
        """H x W bool: the mask after the last step that produced one (init mask or empty otherwise)."""
        for s in reversed(self.steps):
            if s.mask is not None:
                return rle_decode(s.mask)
        if self.init_mask is not None:
            return rle_decode(self.init_mask)
        return np.zeros(self.image_size, bool)

    @property
    def clicks(self) -> list[tuple[int, int, int]]:
        return [tuple(s.click) for s in self.steps if s.click is not None]

    @property
    def iou_curve(self) -> list[float]:
        """IoU after each click (the interactive-segmentation curve)."""
        return [s.iou for s in self.steps if s.click is not None and s.iou is not None]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Episode:
        d = dict(d)
        d["steps"] = [StepRecord(**{**s, "click": tuple(s["click"]) if s.get("click") else None}) for s in d["steps"]]
        d["image_size"] = tuple(d["image_size"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Episode:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        from ibisagent.io.images import atomic_write_bytes

        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> Episode:
        return cls.from_json(Path(path).read_text())


def encode_mask(mask: np.ndarray) -> dict:
    return rle_encode(mask)

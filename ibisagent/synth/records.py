"""Synthesized trajectories as records: what was said, what the environment did, what to train.

Paths in a record (`image_file`, `gt_file`, `obs_files`) are relative to the synthesis output
folder. Masks are RLE (`ibisagent.io.rle`). Clicks are (x, y, label) pixels of the original
image, label 1 positive / 0 negative.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

KINDS = ("segment", "refine", "self_correction", "discard", "negative", "vqa")


@dataclass
class SynthStep:
    """One agent turn. `index` is the environment's 1-based step; `response` the assistant text
    in the released layout; `train` False marks a deliberately wrong turn (masked from the
    loss); `tag`: "" | "wrong" | "correction" | "discard". `mask`/`iou` are after the step
    (None for a stop), `prev_iou` before it (None without a reference)."""

    index: int
    response: str
    kind: str
    train: bool = True
    tag: str = ""
    click: tuple[int, int, int] | None = None
    mask: dict | None = None
    iou: float | None = None
    prev_iou: float | None = None
    facts: dict = field(default_factory=dict)


@dataclass
class Trajectory:
    """One synthesized episode. `obs_files[i]` / `obs_texts[i]` are the image and text of the
    user turn of step i + 1 (the original, or the overlay of the mask before that step, resized
    for the VLM; the released protocol text as the environment produced it)."""

    id: str
    sample_id: str
    kind: str
    query: str
    query_kind: str
    structure: str
    modality: str
    answer: str
    target_present: bool
    image_size: tuple[int, int]  # (H, W) of the original image
    image_file: str  # the original image at full resolution (what the tool sees)
    gt_file: str  # the reference mask PNG (0/255), full resolution
    gt_mask: dict  # RLE of the reference (empty for absent targets)
    steps: list[SynthStep] = field(default_factory=list)
    obs_files: list[str] = field(default_factory=list)
    obs_texts: list[str] = field(default_factory=list)  # the environment's user text before each step
    init_mask: dict | None = None
    init_source: str = ""  # refine: the perturbation recipe; discard: the other structure's name
    seed: int = 0
    reasoning_source: str = "template"  # or "teacher:<model>"

    @property
    def final_iou(self) -> float | None:
        ious = [s.iou for s in self.steps if s.iou is not None]
        return ious[-1] if ious else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Trajectory:
        d = dict(d)
        d["steps"] = [SynthStep(**{**s, "click": tuple(s["click"]) if s.get("click") else None}) for s in d["steps"]]
        d["image_size"] = tuple(d["image_size"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

"""A tiny real dataset (two demo images, downscaled) and one synthesis run shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[2] / "ibisagent" / "assets" / "demo"
ALL_KINDS = {k: 1.0 for k in ("segment", "refine", "self_correction", "discard", "vqa", "negative")}


def make_tiny(root: Path) -> Path:
    """A pairs.csv over the chest X-ray (192 px: both lungs) and the colon image (128 px: polyp)."""
    import cv2

    from ibisagent.io.images import load_image, load_mask, save_mask_png, save_png

    rows = ["image,mask,structure,modality"]
    for name, side, structures, modality in (
        ("15_X-Ray_chest", 192, ("left_lung", "right_lung"), "X-ray"),
        ("24_endoscope_colon", 128, ("polyp",), "endoscopy"),
    ):
        img = load_image(DEMO / "images" / f"{name}.png")
        save_png(root / "images" / f"{name}.png", cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA))
        for s in structures:
            m = load_mask(DEMO / "masks" / f"{name}__{s}.png").astype(np.uint8)
            small = cv2.resize(m, (side, side), interpolation=cv2.INTER_NEAREST) > 0
            save_mask_png(root / "masks" / f"{name}__{s}.png", small)
            rows.append(f"images/{name}.png,masks/{name}__{s}.png,{s.replace('_', ' ')},{modality}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root


def job_config(data: Path, **kw):
    from dataclasses import asdict

    from ibisagent.synth.generate import SynthConfig
    from ibisagent.synth.job import JobConfig

    synth = asdict(SynthConfig(iou_threshold=0.7, max_clicks=5, min_final_iou=0.0))
    return JobConfig(data=str(data), mix=dict(ALL_KINDS), synth=synth, shard_size=4, **kw)


@pytest.fixture(scope="session")
def make_config():
    """job_config(data, **JobConfig fields): the small test configuration."""
    return job_config


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def synth_run(tiny_data, tmp_path_factory):
    """(out folder, summary, trajectories) of one run over the tiny dataset."""
    from ibisagent.synth.job import load_trajectories, run_synth

    out = tmp_path_factory.mktemp("synth")
    summary = run_synth(job_config(tiny_data), out)
    return out, summary, load_trajectories(out)

"""Fixtures of the RL tests: a tiny offline Qwen2.5-VL, a small real dataset (two demo images
shrunk to 64-96 px) and its synthesized expert trajectories exported as step-level RL Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).resolve().parents[2] / "ibisagent" / "assets" / "demo"


def make_small(root: Path) -> Path:
    """pairs.csv over the chest X-ray (96 px: both lungs) and the colon image (64 px: polyp)."""
    import cv2

    from ibisagent.io.images import load_image, load_mask, save_mask_png, save_png

    rows = ["image,mask,structure,modality"]
    for name, side, structures, modality in (
        ("15_X-Ray_chest", 96, ("left_lung", "right_lung"), "X-ray"),
        ("24_endoscope_colon", 64, ("polyp",), "endoscopy"),
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


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    pytest.importorskip("peft")
    import torch

    from ibisagent.policies.tiny_vlm import save_tiny_vlm

    torch.set_num_threads(1)
    return save_tiny_vlm(tmp_path_factory.mktemp("rl_base") / "tiny", "qwen2_5_vl")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    return make_small(tmp_path_factory.mktemp("rl_data"))


@pytest.fixture(scope="session")
def rl_parquet(small_data, tmp_path_factory) -> Path:
    """Step-level RL rows (expert-prefix states) of real synthesized segment/refine episodes."""
    from dataclasses import asdict

    from ibisagent.synth.export import write_rl_parquet
    from ibisagent.synth.generate import SynthConfig
    from ibisagent.synth.job import JobConfig, load_trajectories, run_synth

    out = tmp_path_factory.mktemp("rl_synth")
    synth = asdict(SynthConfig(iou_threshold=0.7, max_clicks=3, min_final_iou=0.0))
    cfg = JobConfig(data=str(small_data), mix={"segment": 1.0, "refine": 1.0}, synth=synth, shard_size=4)
    run_synth(cfg, out)
    dest = out / "rl.parquet"
    assert write_rl_parquet(load_trajectories(out), out, dest) > 0
    return dest

"""Fixtures of the RL tests: a tiny offline Qwen2.5-VL, a small real dataset (two demo images
shrunk to 64-96 px) and its synthesized expert trajectories exported as step-level RL Parquet."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    pytest.importorskip("peft")
    import torch

    from ibisagent.testing.tiny_vlm import save_tiny_vlm

    torch.set_num_threads(1)
    return save_tiny_vlm(tmp_path_factory.mktemp("rl_base") / "tiny", "qwen2_5_vl")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, demo_pairs) -> Path:
    """The chest X-ray at 96 px (both lungs) and the colon image at 64 px (polyp)."""
    return demo_pairs(tmp_path_factory.mktemp("rl_data"), 96, 64)


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

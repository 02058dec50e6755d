"""Fixtures for the SFT tests: a tiny offline Qwen2.5-VL and rows from real oracle episodes."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    pytest.importorskip("trl")
    import torch

    from ibisagent.testing.tiny_vlm import save_tiny_vlm

    torch.set_num_threads(1)
    return save_tiny_vlm(tmp_path_factory.mktemp("sft_base") / "tiny", "qwen2_5_vl")


@pytest.fixture(scope="session")
def oracle_trajectories(tool, demo_dir):
    """Rows (one per step, as released) of real episodes: the click simulator on two demo
    images shrunk to 96 px, through IbisEnv and LiteMedSAM."""
    from ibisagent.train.vlm.sft_data import oracle_rows

    return oracle_rows(demo_dir / "pairs.csv", tool, max_samples=2, max_side=96, max_steps=6)

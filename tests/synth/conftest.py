"""A tiny real dataset (two demo images, downscaled) and one synthesis run shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SIDES = (192, 128)  # pixels: the chest X-ray (both lungs) and the colon image (polyp)
ALL_KINDS = {k: 1.0 for k in ("segment", "refine", "self_correction", "discard", "vqa", "negative")}


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
def tiny_data(tmp_path_factory, demo_pairs) -> Path:
    return demo_pairs(tmp_path_factory.mktemp("tiny"), *TINY_SIDES)


@pytest.fixture(scope="session")
def synth_run(tiny_data, tmp_path_factory):
    """(out folder, summary, trajectories) of one run over the tiny dataset."""
    from ibisagent.synth.job import load_trajectories, run_synth

    out = tmp_path_factory.mktemp("synth")
    summary = run_synth(job_config(tiny_data), out)
    return out, summary, load_trajectories(out)

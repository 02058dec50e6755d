"""A tiny SAM2 model with random weights: its config (tiny_sam2.yaml, copied into a temporary
folder as a user's file would be) and a checkpoint in the sam2 format {"model": state_dict}.

No real SAM2 / MedSAM2 weights exist offline here; these tests check loading and the prediction
path (shapes, prompts, cache, errors, agreement with SAM2ImagePredictor), not mask quality.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_CONFIG = Path(__file__).with_name("tiny_sam2.yaml")


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory) -> tuple[Path, Path]:
    """(config path, checkpoint path) of the tiny model, random weights drawn with seed 0."""
    import torch

    from ibisagent.tools.sam2 import build_model

    root = tmp_path_factory.mktemp("sam2_tiny")
    config = root / "tiny_sam2.yaml"
    shutil.copy(TINY_CONFIG, config)
    torch.manual_seed(0)
    model = build_model(config)
    checkpoint = root / "tiny_sam2.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    return config, checkpoint


@pytest.fixture(scope="session")
def tiny_spec(tiny_files) -> str:
    config, checkpoint = tiny_files
    return f"sam2:{config}:{checkpoint}"


@pytest.fixture(scope="session")
def sam2_tool(tiny_spec):
    from ibisagent.tools import make_tool

    return make_tool(tiny_spec)

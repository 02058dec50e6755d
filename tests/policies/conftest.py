"""Fixtures for the policy tests: tiny offline VLMs and small real images with reference masks."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_vlm_dirs(tmp_path_factory) -> dict:
    """{family: folder} of saved tiny random Qwen2.5-VL / Qwen3-VL checkpoints."""
    pytest.importorskip("transformers")
    import torch

    from ibisagent.testing.tiny_vlm import save_tiny_vlm

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_vlm")
    return {fam: save_tiny_vlm(root / fam, fam) for fam in ("qwen2_5_vl", "qwen3_vl")}


@pytest.fixture(scope="session")
def small_case(demo_samples):
    """(image 128 x 128 x 3 uint8, reference mask 128 x 128 bool, query) from the demo's liver."""
    import cv2

    s = next(s for s in demo_samples if s.structure == "liver")
    image, gt = s.load()
    img = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA)
    m = cv2.resize(gt.astype(np.uint8), (128, 128), interpolation=cv2.INTER_NEAREST).astype(bool)
    return img, m, "Segment the liver"

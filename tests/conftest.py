"""Shared fixtures: the bundled demo data and one LiteMedSAM tool per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


def write_demo_pairs(root: Path, chest_side: int, colon_side: int) -> Path:
    """ROOT/pairs.csv over the chest X-ray (both lungs) and the colon image (polyp), resized to
    chest_side and colon_side pixels square."""
    import cv2
    import numpy as np

    from ibisagent.io.images import load_image, load_mask, save_mask_png, save_png

    rows = ["image,mask,structure,modality"]
    for name, side, structures, modality in (
        ("15_X-Ray_chest", chest_side, ("left_lung", "right_lung"), "X-ray"),
        ("24_endoscope_colon", colon_side, ("polyp",), "endoscopy"),
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
def demo_dir() -> Path:
    return DEMO


@pytest.fixture(scope="session")
def demo_pairs():
    """write_demo_pairs(root, chest_side, colon_side): a small real dataset of two demo images
    (tests/synth, tests/rl and tests/verl build theirs with it)."""
    return write_demo_pairs


@pytest.fixture(scope="session")
def demo_samples():
    from ibisagent.data.pairs import read_pairs_csv

    return read_pairs_csv(DEMO / "pairs.csv")


@pytest.fixture(scope="session")
def tool():
    """The default LiteMedSAM tool (encoder on CPU); loaded once, embeddings cached."""
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    return LiteMedSAMTool()


@pytest.fixture(scope="session")
def original_tool():
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    return LiteMedSAMTool(weights="original")

"""Shared fixtures: the bundled demo data and one LiteMedSAM tool per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


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

"""Fixtures of the verl integration tests: real RL rows from a small synthesis run.

verl's wheel ships a top-level `tests` package that shadows this folder, so nothing here (or in
the tests using it) imports `tests.*`: the synthesis helpers are loaded by file path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _synth_helpers():
    path = Path(__file__).resolve().parents[1] / "synth" / "conftest.py"
    spec = importlib.util.spec_from_file_location("ibis_tests_synth_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synth_rl_rows(tmp_path_factory, demo_pairs) -> list[dict]:
    """Step-level RL rows (synth.export.rl_rows) of a small synthesis run over two demo images
    (`demo_pairs`: the root conftest's fixture of that name)."""
    from ibisagent.synth.export import rl_rows
    from ibisagent.synth.job import load_trajectories, run_synth

    helpers = _synth_helpers()
    job_config = helpers.job_config
    data = demo_pairs(tmp_path_factory.mktemp("tiny"), *helpers.TINY_SIDES)
    out = tmp_path_factory.mktemp("synth")
    run_synth(job_config(data), out)
    return rl_rows(load_trajectories(out), out)


@pytest.fixture(scope="module")
def rl_rows(tmp_path_factory, demo_pairs):
    return synth_rl_rows(tmp_path_factory, demo_pairs)


@pytest.fixture
def shared_scorer(monkeypatch, tool):
    """Route the verl reward module's in-process scorer to the session's LiteMedSAM tool."""
    from ibisagent.integrations.verl import reward
    from ibisagent.rewards import StepScorer

    monkeypatch.setenv("IBISAGENT_TOOL", "litemedsam")
    monkeypatch.setitem(reward._shared, "litemedsam", StepScorer(tool))

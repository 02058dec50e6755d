"""Fixtures of the remote-tool tests: the real REST app served by uvicorn on loopback."""

from __future__ import annotations

import contextlib

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'ibisagent[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'ibisagent[serve]'")

XRAY = "images/15_X-Ray_chest.png"
XRAY_LEFT_LUNG = "masks/15_X-Ray_chest__left_lung.png"
CT = "images/06_CT_abdomen.png"
CT_LIVER = "masks/06_CT_abdomen__liver.png"


@contextlib.contextmanager
def serve(tool, **limits):
    """The app on `tool` (the session's LiteMedSAM) on a free loopback port; yields its URL."""
    from ibisagent.app.api import create_app
    from ibisagent.app.background import running_server
    from ibisagent.app.config import ServeConfig

    with running_server(create_app(ServeConfig(**limits), tool=tool)) as url:
        yield url


@pytest.fixture(scope="module")
def server_url(tool):
    with serve(tool) as url:
        yield url


@pytest.fixture(scope="module")
def rl_rows(tmp_path_factory, tool):
    """Step-level RL rows (synth.export.rl_rows) of a small synthesis run over two demo images."""
    from ibisagent.synth.export import rl_rows as make_rows
    from ibisagent.synth.job import load_trajectories, run_synth
    from tests.synth.conftest import job_config, make_tiny

    data = make_tiny(tmp_path_factory.mktemp("tiny"))
    out = tmp_path_factory.mktemp("synth")
    run_synth(job_config(data), out)
    return make_rows(load_trajectories(out), out)

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

    limits = {"queue_timeout_s": 600.0, "episode_timeout_s": 600.0, **limits}  # slow shared CI machines
    with running_server(create_app(ServeConfig(**limits), tool=tool)) as url:
        yield url


@pytest.fixture(scope="module")
def server_url(tool):
    with serve(tool) as url:
        yield url


@pytest.fixture(scope="module")
def rl_rows(tmp_path_factory, demo_pairs):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "verl" / "conftest.py"
    spec = importlib.util.spec_from_file_location("ibis_tests_verl_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synth_rl_rows(tmp_path_factory, demo_pairs)

"""Fixtures of the web app / REST tests: one app on the session's LiteMedSAM tool."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'ibisagent[serve]'")

XRAY = "images/15_X-Ray_chest.png"
XRAY_LEFT_LUNG = "masks/15_X-Ray_chest__left_lung.png"
XRAY_RIGHT_LUNG = "masks/15_X-Ray_chest__right_lung.png"


@pytest.fixture(scope="module")
def app_config():
    from ibisagent.app.config import ServeConfig

    return ServeConfig(max_upload_bytes=4 * 1024 * 1024, max_pixels=1024 * 1024, max_images=4, max_steps=6)


@pytest.fixture(scope="module")
def client(tool, app_config):
    from fastapi.testclient import TestClient

    from ibisagent.app.api import create_app

    with TestClient(create_app(app_config, tool=tool), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def xray_id(client, demo_dir) -> str:
    r = client.post("/v1/images", files={"image": ("xray.png", (demo_dir / XRAY).read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    return r.json()["image_id"]


def b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()

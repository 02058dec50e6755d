"""The REST API on real demo images: uploads, tool calls, agent episodes."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from ibisagent.env.episode import Episode
from ibisagent.io.images import load_mask
from ibisagent.io.rle import rle_decode, rle_encode
from ibisagent.metrics import iou
from tests.app.conftest import XRAY, XRAY_LEFT_LUNG, XRAY_RIGHT_LUNG, b64


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and "litemedsam" in r.json()["tool"]


def test_page_and_openapi(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas" in r.text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/images", "/v1/tool/segment", "/v1/segment", "/v1/masks", "/healthz"} <= set(paths)


def test_upload_is_content_addressed_and_embeds_once(client, xray_id, demo_dir):
    data = (demo_dir / XRAY).read_bytes()
    r = client.post("/v1/images", content=data, headers={"content-type": "image/png", "x-filename": "again.png"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["image_id"] == xray_id and (j["width"], j["height"]) == (1024, 1024) and j["cached"] is True


def test_click_gives_mask_and_chains(client, xray_id, demo_dir):
    # a positive click in the left lung (image right side), normalised, then a second click chained on the logits
    ref = load_mask(demo_dir / XRAY_LEFT_LUNG)
    body = {"image_id": xray_id, "points": [[0.70, 0.45]], "labels": [1], "outputs": ["rle", "png", "overlay"]}
    r1 = client.post("/v1/tool/segment", json={**body, "reference_mask": rle_encode(ref)})
    assert r1.status_code == 200, r1.text
    j1 = r1.json()
    m1 = rle_decode(j1["mask"]["rle"])
    assert j1["clicks"] == [[716, 460, 1]] and j1["mask"]["area"] == int(m1.sum())
    assert abs(j1["iou"] - iou(m1, ref)) < 1e-9 and j1["logits_id"]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(j1["mask"]["png"]))))
    assert png.shape == (1024, 1024) and np.array_equal(png > 127, m1)
    assert Image.open(io.BytesIO(base64.b64decode(j1["mask"]["overlay"]))).size == (1024, 1024)
    # pixels and normalised coordinates address the same pixel
    r_px = client.post("/v1/tool/segment", json={**body, "points": [[716, 460]], "coords": "px"})
    assert rle_decode(r_px.json()["mask"]["rle"]).tolist() == m1.tolist()
    body2 = {**body, "points": [[0.70, 0.45], [0.70, 0.30]], "labels": [1, 1], "prev_logits_id": j1["logits_id"]}
    j2 = client.post("/v1/tool/segment", json=body2).json()
    assert not np.array_equal(rle_decode(j2["mask"]["rle"]), m1)


def test_prev_mask_without_clicks_is_returned_and_refined(client, xray_id, demo_dir):
    ref = load_mask(demo_dir / XRAY_RIGHT_LUNG)
    j = client.post("/v1/tool/segment", json={"image_id": xray_id, "prev_mask": b64(demo_dir / XRAY_RIGHT_LUNG)}).json()
    assert np.array_equal(rle_decode(j["mask"]["rle"]), ref) and j["score"] is None and j["logits_id"]
    j2 = client.post(
        "/v1/tool/segment",
        json={"image_id": xray_id, "points": [[300, 450]], "labels": [0], "prev_logits_id": j["logits_id"]},
    ).json()
    assert j2["clicks"] == [[300, 450, 0]] and not np.array_equal(rle_decode(j2["mask"]["rle"]), ref)


def test_multipart_tool_call_with_upload(client, demo_dir, xray_id):
    files = {
        "image": ("chest.png", (demo_dir / XRAY).read_bytes(), "image/png"),
        "reference_mask": ("ref.png", (demo_dir / XRAY_LEFT_LUNG).read_bytes(), "image/png"),
    }
    r = client.post("/v1/tool/segment", files=files, data={"points": "[[716, 460]]", "labels": "[1]", "coords": "px"})
    assert r.status_code == 200, r.text
    assert r.json()["image_id"] == xray_id and r.json()["iou"] is not None


def test_mask_upload_returns_rle(client, xray_id, demo_dir):
    files = {"mask": ("m.png", (demo_dir / XRAY_LEFT_LUNG).read_bytes(), "image/png")}
    r = client.post("/v1/masks", files=files, data={"image_id": xray_id})
    assert r.status_code == 200, r.text
    assert np.array_equal(rle_decode(r.json()["rle"]), load_mask(demo_dir / XRAY_LEFT_LUNG))


def test_oracle_episode(client, xray_id, demo_dir):
    ref = load_mask(demo_dir / XRAY_LEFT_LUNG)
    body = {
        "image_id": xray_id,
        "query": "Segment the left lung",
        "policy": "oracle",
        "reference_mask": rle_encode(ref),
        "max_steps": 4,
        "step_overlays": True,
        "outputs": ["rle", "png"],
    }
    r = client.post("/v1/segment", json=body)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["policy"] == "oracle" and j["stop_reason"] in ("stop", "max_steps", "repeat") and 1 <= len(j["steps"]) <= 4
    for s in j["steps"]:
        assert s["reasoning"] and s["iou"] is not None and s["overlay"]
    final = rle_decode(j["mask"]["rle"])
    assert abs(j["iou"] - iou(final, ref)) < 1e-9 and j["iou"] == j["steps"][-1]["iou"]
    ep = Episode.from_dict(j["episode"])
    assert ep.clicks == [tuple(c) for c in j["clicks"]] and np.array_equal(ep.final_mask, final)
    # the oracle's clicks make progress on this image even with the box-trained prompt path
    assert max(s["iou"] for s in j["steps"]) > 0.05
    assert j["logits_id"]


def test_episode_step_limit_is_capped_by_server(client, xray_id, demo_dir, app_config):
    body = {
        "image_id": xray_id,
        "query": "left lung",
        "policy": "oracle",
        "reference_mask": b64(demo_dir / XRAY_LEFT_LUNG),
    }
    j = client.post("/v1/segment", json={**body, "max_steps": 500, "policy_options": {"iou_threshold": 1.0}}).json()
    assert len(j["steps"]) <= app_config.max_steps

"""A person's clicks through the human policy and the environment (REST sessions): the episode
record holds real protocol turns; undo/reset; an agent run continues by hand; errors are 4xx."""

from __future__ import annotations

import numpy as np

from ibisagent.env.protocol import parse_response
from ibisagent.io.rle import rle_decode
from tests.app.conftest import XRAY_LEFT_LUNG, b64


def test_person_clicks_go_through_the_human_policy_and_the_env(client, xray_id, demo_dir):
    r = client.post("/v1/sessions", json={"image_id": xray_id, "query": "left lung"})
    assert r.status_code == 200, r.text
    s = r.json()
    sid = s["session_id"]
    assert s["steps"] == 0 and s["mask"]["area"] == 0 and not s["can_undo"] and s["mask"]["overlay"]
    ref = client.post(
        "/v1/masks", data={"image_id": xray_id}, files={"mask": ("m.png", (demo_dir / XRAY_LEFT_LUNG).read_bytes())}
    )
    r = client.post(f"/v1/sessions/{sid}/reference", json={"reference_mask": ref.json()["rle"]})
    assert r.status_code == 200 and r.json()["iou"] == 0.0
    # a positive click at the left lung's centre (the image's right half), then a negative one
    gt = rle_decode(ref.json()["rle"])
    ys, xs = np.nonzero(gt)
    H, W = gt.shape
    cx, cy = int(np.median(xs)), int(np.median(ys))
    first = client.post(f"/v1/sessions/{sid}/act", json={"command": f"p {(cx + 0.5) / W:.6f},{(cy + 0.5) / H:.6f}"})
    assert first.status_code == 200, first.text
    a = first.json()
    assert a["step"]["kind"] == "positive" and a["step"]["click"] == [cx, cy, 1] and a["clicks"] == [[cx, cy, 1]]
    assert a["mask"]["area"] > 0 and a["iou"] > 0.3 and a["can_undo"] and a["tool_ms"] > 0
    second = client.post(f"/v1/sessions/{sid}/act", json={"command": "n 0.02,0.02"}).json()
    assert second["step"]["kind"] == "negative" and len(second["clicks"]) == 2 and second["steps"] == 2
    ep = client.get(f"/v1/sessions/{sid}/episode").json()
    assert [s["kind"] for s in ep["steps"]] == ["positive", "negative"] and ep["meta"]["person_steps"] == [1, 2]
    assert ep["meta"]["policy"] == "human" and ep["query"] == "left lung"
    # each step is a protocol turn the env parsed: the person's click, normalised to 4 decimals
    act = parse_response(ep["steps"][0]["response"])
    assert act.kind == "positive" and act.to_pixel(W, H) == (cx, cy)
    assert ep["steps"][0]["reward"] > 0 and ep["steps"][0]["iou"] == a["iou"]
    # undo restores the one-click state exactly; reset the start
    u = client.post(f"/v1/sessions/{sid}/undo").json()
    assert u["clicks"] == a["clicks"] and u["mask"]["rle"] == a["mask"]["rle"] and u["steps"] == 1
    again = client.post(f"/v1/sessions/{sid}/act", json={"command": "n 0.02,0.02"}).json()
    assert again["mask"]["rle"] == second["mask"]["rle"]  # same state, same tool inputs, same mask
    z = client.post(f"/v1/sessions/{sid}/reset").json()
    assert z["steps"] == 0 and z["mask"]["area"] == 0 and not z["can_undo"]
    assert client.get(f"/v1/sessions/{sid}/episode").json()["steps"] == []
    # stop ends the episode with the person's answer
    done = client.post(f"/v1/sessions/{sid}/act", json={"command": "stop The left lung."}).json()
    assert done["done"] and done["stop_reason"] == "stop"
    assert client.get(f"/v1/sessions/{sid}/episode").json()["answer"] == "The left lung."
    r = client.post(f"/v1/sessions/{sid}/act", json={"command": "p 0.5,0.5"})
    assert r.status_code == 400 and "ended" in r.json()["error"]


def test_a_person_continues_the_agents_episode(client, xray_id, demo_dir):
    ref = b64(demo_dir / XRAY_LEFT_LUNG)
    out = client.post(
        "/v1/segment",
        json={"image_id": xray_id, "query": "left lung", "policy": "oracle", "reference_mask": ref, "max_steps": 2},
    ).json()
    sid, n = out["session_id"], len(out["steps"])
    assert sid and n >= 1
    r = client.post(f"/v1/sessions/{sid}/act", json={"command": "n 0.02,0.02", "outputs": ["rle"]}).json()
    assert r["steps"] == n + 1 and r["step"]["index"] == n + 1 and len(r["clicks"]) == len(out["clicks"]) + 1
    ep = client.get(f"/v1/sessions/{sid}/episode").json()
    assert ep["meta"]["person_steps"] == [n + 1] and ep["meta"]["policy"] == "oracle"
    assert ep["meta"]["agent_stop_reason"] == out["stop_reason"]
    # undo: back to the agent's result; again: before the agent ran
    u = client.post(f"/v1/sessions/{sid}/undo", json={"outputs": ["rle"]}).json()
    assert u["mask"]["rle"] == out["mask"]["rle"] and u["steps"] == n and u["can_undo"]
    blank = client.post(f"/v1/sessions/{sid}/undo", json={"outputs": ["rle"]}).json()
    assert blank["steps"] == 0 and blank["mask"]["area"] == 0 and not blank["can_undo"]


def test_session_errors_are_clear_4xx(client, xray_id):
    assert client.post("/v1/sessions/" + "0" * 32 + "/act", json={"command": "p 0.5,0.5"}).status_code == 404
    assert client.post("/v1/sessions", json={"image_id": "nope"}).status_code == 404
    sid = client.post("/v1/sessions", json={"image_id": xray_id}).json()["session_id"]
    for command, message in [("jump 1,2", "expected 'p X,Y'"), ("p 1e9,5", "outside"), ("p nan,0.5", "finite")]:
        r = client.post(f"/v1/sessions/{sid}/act", json={"command": command})
        assert r.status_code == 400 and message in r.json()["error"], (command, r.text)
    assert client.post(f"/v1/sessions/{sid}/undo").status_code == 400
    r = client.post(f"/v1/sessions/{sid}/act", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    assert client.post(f"/v1/sessions/{sid}/act", json={"command": "p 0.5,0.5", "x": 1}).status_code == 422

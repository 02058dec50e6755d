"""RemoteTool against the real app on loopback: same masks as in process, one upload per image,
evicted state rebuilt, a server that is down fails loudly."""

from __future__ import annotations

import numpy as np
import pytest

from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import format_response
from ibisagent.io.images import load_image, load_mask
from ibisagent.tools import make_tool
from ibisagent.tools.remote import RemoteLogits, RemoteTool, ToolServerError
from tests.remote.conftest import CT, CT_LIVER, XRAY, serve

# (x, y) normalised clicks on the CT slice: liver, more liver, a negative one outside it
CLICKS = [("positive", 0.30, 0.45), ("positive", 0.25, 0.55), ("negative", 0.60, 0.40)]


def _episode(tool, image, gt):
    env = IbisEnv(tool, max_steps=10)
    env.reset(image, "Segment the liver.", gt_mask=gt)
    masks = []
    for kind, x, y in CLICKS:
        env.step(format_response("Looking at the liver.", kind, x, y))
        masks.append(env.mask.copy())
    return masks, env


def test_make_tool_and_same_masks_as_in_process(tool, server_url, demo_dir):
    image, gt = load_image(demo_dir / CT), load_mask(demo_dir / CT_LIVER)
    remote = make_tool(server_url, strategy="points+prior", retries=0, timeout=600)
    assert isinstance(remote, RemoteTool) and "litemedsam" in remote.name
    local_masks, _ = _episode(tool, image, gt)
    remote_masks, env = _episode(remote, image, gt)
    for a, b in zip(local_masks, remote_masks):
        assert a.shape == b.shape and a.any()
        assert np.array_equal(a, b)
    assert isinstance(env.logits, RemoteLogits) and env.logits.logits_id
    # a second episode (another GRPO rollout) on the same image uploads nothing
    _episode(remote, image, gt)
    assert remote.stats["uploads"] == 1 and remote.timings.cache_hits >= 1


def test_box_and_given_mask_match_in_process(tool, server_url, demo_dir):
    image, gt = load_image(demo_dir / CT), load_mask(demo_dir / CT_LIVER)
    remote = RemoteTool(url=server_url, retries=0, timeout=600)
    ys, xs = np.nonzero(gt)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    a, b = tool.predict(image, box=box), remote.predict(image, box=box)
    assert np.array_equal(a.mask, b.mask) and abs(a.score - b.score) < 1e-5
    # refinement from a given mask (mask_to_logits travels as RLE, the server makes the logits)
    pts, lab = np.array([[300.0, 200.0]]), np.array([0])
    la = tool.predict(image, pts, lab, tool.mask_to_logits(tool.embed(image), gt))
    lb = remote.predict(image, pts, lab, remote.mask_to_logits(remote.embed(image), gt))
    assert np.array_equal(la.mask, lb.mask)


def test_evicted_logits_are_replayed_and_evicted_images_reuploaded(tool, demo_dir):
    ct, xray = load_image(demo_dir / CT), load_image(demo_dir / XRAY)
    pts1, pts2 = np.array([[160.0, 230.0]]), np.array([[160.0, 230.0], [130.0, 280.0]])
    want = tool.predict(ct, pts2, np.array([1, 1]), tool.predict(ct, pts1, np.array([1])).logits).mask
    with serve(tool, max_logits=1, max_images=1) as url:
        remote = RemoteTool(url=url, retries=0, timeout=600)
        first = remote.predict(ct, pts1, np.array([1]))
        remote.predict(ct, np.array([[10.0, 10.0]]), np.array([1]))  # evicts first's logits
        got = remote.predict(ct, pts2, np.array([1, 1]), first.logits)
        assert remote.stats["replays"] == 1 and np.array_equal(got.mask, want)
        remote.embed(xray)  # the server keeps one image: the CT is dropped there
        again = remote.predict(ct, pts1, np.array([1]))
        assert remote.stats["reuploads"] == 1 and np.array_equal(again.mask, first.mask)


def test_client_errors_are_not_retried(server_url, demo_dir):
    remote = RemoteTool(url=server_url, retries=3, backoff=0.01)
    emb = remote.embed(load_image(demo_dir / CT))
    with pytest.raises(ToolServerError, match="HTTP 400"):
        remote.predict(emb, box=np.array([50.0, 50.0, 10.0, 10.0]))  # x0 > x1
    assert remote.stats["retries"] == 0


def test_server_down_fails_loudly(demo_dir):
    from ibisagent.app.background import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ToolServerError, match="after 2 tries"):
        make_tool(url, retries=1, backoff=0.01)
    remote = RemoteTool(url=url, retries=1, backoff=0.01, check=False)
    with pytest.raises(ToolServerError, match="tool server failed"):
        remote.embed(load_image(demo_dir / CT))
    assert remote.stats["retries"] == 1


def test_token_protected_server(tool, demo_dir, monkeypatch):
    """A server started with a token refuses a client without it; the remote tool sends
    $IBISAGENT_TOKEN (or token=) as a bearer token."""
    img = load_image(demo_dir / XRAY)
    with serve(tool, token="t0ken") as url:
        monkeypatch.delenv("IBISAGENT_TOKEN", raising=False)
        bare = RemoteTool(url=url)  # /healthz is open
        with pytest.raises(ToolServerError, match="401|token"):
            bare.embed(img)
        monkeypatch.setenv("IBISAGENT_TOKEN", "t0ken")
        remote = RemoteTool(url=url)
        out = remote.predict(remote.embed(img), np.array([[512.0, 400.0]]), np.array([1]))
        assert out.mask.shape == img.shape[:2]

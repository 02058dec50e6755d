"""The OpenAI-compatible policy against a real HTTP server on loopback (ibisagent.testing.mock_chat_server)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ibisagent.env.env import IbisEnv, Observation
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import SYSTEM_PROMPT, first_turn_text, format_response
from ibisagent.policies import make_policy
from ibisagent.policies.openai_compat import PolicyServerError, base_url
from ibisagent.policies.runner import run_episode
from ibisagent.testing.mock_chat_server import MockChatServer

CLICK = format_response("The liver is on the left.", "positive", 0.3, 0.45)
STOP = format_response("Done.", "stop", answer="The liver is segmented.")


def first_obs(h: int = 1024, w: int = 768, query: str = "Segment the liver") -> tuple[Observation, Episode]:
    img = np.zeros((h, w, 3), np.uint8)
    obs = Observation(img, np.zeros((h, w), bool), first_turn_text(query), query, 0, [], img)
    return obs, Episode(query, (h, w))


def test_request_layout_and_model_listing():
    with MockChatServer(lambda body, n: CLICK) as srv:
        pol = make_policy(f"openai:{srv.url}", retries=0)
        obs, ep = first_obs()
        assert pol.act(obs, ep) == CLICK
        body = srv.requests[-1]
        assert body["model"] == "mock-ibis" and body["temperature"] == 0.0 and body["max_tokens"] == 512
        assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        parts = body["messages"][1]["content"]
        assert [p["type"] for p in parts] == ["image_url", "text"] and parts[1]["text"] == "Segment the liver"
        (img,) = srv.images()
        assert img.size[0] * img.size[1] <= 512 * 512 and img.size == (443, 591)
        named = make_policy(f"openai:{srv.url.removesuffix('/v1')}#other-model", retries=0)
        named.act(obs, ep)
        assert srv.requests[-1]["model"] == "other-model"


def test_episode_and_garbage_replies(tool, small_case):
    img, gt, query = small_case
    with MockChatServer(lambda body, n: CLICK if n == 1 else STOP) as srv:
        ep = run_episode(IbisEnv(tool), make_policy(f"openai:{srv.url}#m"), img, query, gt_mask=gt)
        assert [s.kind for s in ep.steps] == ["positive", "stop"] and ep.answer == "The liver is segmented."
        assert len(srv.requests[1]["messages"]) == 2  # history off, as released
    garbage = {
        "": "<action> block missing",
        "<think>\nthe liver is": "<action> block missing",
        "<think>x</think><action>\nPositive Point (0.5": "not closed",
        "<think>x</think><action>Positive Point (1.5000, 0.2000)</action>": "outside [0, 1]",
        "<action>Terminate</action><action>Terminate</action>": "2 <action> blocks",
        "Positive Point (0.5, 0.5)": "<action> block missing",
        "\x00\x01 ☃ garbage": "<action> block missing",
    }
    for text, why in garbage.items():
        with MockChatServer(lambda body, n, t=text: t) as srv:
            pol = make_policy(f"openai:{srv.url}#m")
            ep = run_episode(IbisEnv(tool), pol, img, query)
            assert ep.stop_reason == "invalid" and len(ep.steps) == 1, text
            assert why in ep.steps[0].error, (text, ep.steps[0].error)
    with MockChatServer(lambda body, n: None) as srv:  # content null
        pol = make_policy(f"openai:{srv.url}#m")
        assert run_episode(IbisEnv(tool), pol, img, query).stop_reason == "invalid" and pol.stats["empty"] == 1


def test_retries_then_success_and_client_errors_fail_fast():
    obs, ep = first_obs(64, 64)
    with MockChatServer(lambda body, n: 503 if n <= 2 else CLICK) as srv:
        pol = make_policy(f"openai:{srv.url}#m", retries=3, backoff=0.01)
        assert pol.act(obs, ep) == CLICK and pol.stats["retries"] == 2
    with MockChatServer(lambda body, n: 400) as srv:
        pol = make_policy(f"openai:{srv.url}#m", retries=3)
        with pytest.raises(PolicyServerError, match=r"HTTP 400.*after 1 try"):
            pol.act(obs, ep)
        assert len(srv.requests) == 1


def test_unreachable_and_slow_servers_give_clear_errors():
    obs, ep = first_obs(64, 64)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pol = make_policy(f"openai:http://127.0.0.1:{port}/v1#m", retries=2, backoff=0.01)
    with pytest.raises(PolicyServerError, match=r"127\.0\.0\.1.*after 3 tries"):
        pol.act(obs, ep)
    with MockChatServer(lambda body, n: CLICK, delay=1.0) as srv:
        pol = make_policy(f"openai:{srv.url}#m", retries=1, timeout=0.2, backoff=0.01)
        t0 = time.perf_counter()
        with pytest.raises(PolicyServerError, match=r"no answer within 0.2 s \(after 2 tries\)"):
            pol.act(obs, ep)
        assert time.perf_counter() - t0 < 1.5  # without the timeout: 2 tries x 1 s delay


def test_concurrency_limit():
    items = [first_obs(32, 32) for _ in range(6)]
    with MockChatServer(lambda body, n: CLICK, delay=0.15) as srv:
        pol = make_policy(f"openai:{srv.url}#m", concurrency=2)
        out = pol.act_batch(items)
        assert out == [CLICK] * 6 and srv.peak == 2


def test_url_forms():
    assert base_url("http://h:8000") == "http://h:8000/v1"
    assert base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert base_url("https://h/v1/chat/completions") == "https://h/v1"
    with pytest.raises(Exception, match="http"):
        make_policy("openai:ftp://h")
    with pytest.raises(Exception, match="openai:URL"):
        make_policy("openai:")


def test_connections_are_kept_alive_and_reopened_when_the_server_drops_them():
    from ibisagent.chat_client import ChatClient

    with MockChatServer(lambda body, n: CLICK) as srv:
        client = ChatClient(srv.url, retries=0)
        for _ in range(4):
            assert client.chat({"model": "m", "messages": []}) == (CLICK, "stop")
        assert client.stats["connections"] == 1 and client.stats["requests"] == 4
    # a server that drops each connection after one answer without saying so (an idle timeout):
    # the next call finds its kept connection dead and reconnects at once, no retry, no failure
    with _server(_OneShotHandler) as url:
        client = ChatClient(url, retries=0)
        for _ in range(3):
            assert client.chat({"model": "m", "messages": []}) == (STOP, "stop")
    assert client.stats["connections"] == 3 and client.stats["failures"] == 0 and client.stats["retries"] == 0


class _OneShotHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        data = json.dumps({"choices": [{"message": {"content": STOP}, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True  # closes the socket, though the reply said keep-alive


@contextlib.contextmanager
def _server(handler):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    finally:
        srv.shutdown()
        srv.server_close()


def test_images_are_lossless_grey_when_grey_and_encoded_once_per_episode():
    from ibisagent.env.episode import StepRecord
    from ibisagent.env.protocol import refinement_turn_text
    from ibisagent.io.rle import rle_encode
    from ibisagent.overlay import OVERLAY_ALPHA, OVERLAY_COLOR, render_overlay
    from ibisagent.policies.vlm_chat import cap_image

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (60, 80, 1), dtype=np.uint8), 3, axis=2)
    query = "Segment the liver"
    mask = np.zeros((60, 80), bool)
    mask[10:30, 20:50] = True
    over = render_overlay(grey, mask, OVERLAY_COLOR, OVERLAY_ALPHA)
    ep0 = Episode(query, (60, 80))
    ep1 = Episode(query, (60, 80), steps=[StepRecord(1, CLICK, "positive", mask=rle_encode(mask))])
    views = [
        (Observation(grey, np.zeros((60, 80), bool), first_turn_text(query), query, 0, [], grey), ep0),
        (Observation(over, mask, refinement_turn_text(query), query, 1, [], grey), ep1),
    ]
    with MockChatServer(lambda body, n: CLICK) as srv:
        pol = make_policy(f"openai:{srv.url}#m", history=True)
        for obs, ep in views:
            pol.act(obs, ep)
        first, second = srv.images(0), srv.images(1)
        assert first[0].mode == "L" and second[1].mode == "RGB"  # grey slice: one channel
        for got, want in ((first[0], grey), (second[0], grey), (second[1], over)):
            assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(cap_image(want)))  # lossless
        # the history-on second step re-sends the first image from the cache: 2 encodings, not 3
        assert (pol.data_url.misses, pol.data_url.hits) == (2, 1)

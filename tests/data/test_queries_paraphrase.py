from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ibisagent.data.paraphrase import Paraphraser
from ibisagent.data.queries import KINDS, absent_targets, build_queries, make_query, paraphrase_queries


def test_queries_are_seeded_and_cover_kinds(demo_samples):
    a = build_queries(demo_samples, seed=7)
    b = build_queries(list(reversed(demo_samples)), seed=7)
    assert sorted(q.text for _, q in a) == sorted(q.text for _, q in b)  # order-independent
    assert {q.kind for _, q in a} == set(KINDS)
    texts = {q.text for _, q in build_queries(demo_samples, ["referring"], seed=8)}
    assert texts != {q.text for _, q in a if q.kind == "referring"}
    ref = make_query(demo_samples[0], "referring", 7)
    assert demo_samples[0].structure in ref.text and ref.target_present
    refine = [q for _, q in a if q.kind == "refinement"]
    assert all(q.perturbation for q in refine)
    reasoning = make_query(next(s for s in demo_samples if s.structure == "liver"), "reasoning", 1)
    assert "liver" not in reasoning.text.lower()  # implied, not named


def test_absent_targets_answer_no(demo_samples):
    neg = absent_targets(demo_samples, seed=0)
    assert neg and all(s.negative for s in neg)
    here = {(s.image.name, s.structure) for s in demo_samples}
    assert all((s.image.name, s.structure) not in here for s in neg)
    q = make_query(neg[0], "closed", 0)
    assert not q.target_present and q.answer.startswith("No")
    image, mask = neg[0].load()
    assert mask.shape == image.shape[:2] and not mask.any()
    assert all(q.kind != "refinement" for _, q in build_queries(neg))
    # file-backed: no loader, so embedding caches keyed on the image file apply to them
    assert all(s.loader is None and s.mask is None for s in neg)


class _FakeOpenAI(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        text = body["messages"][-1]["content"]
        reply = "Kindly " + text[0].lower() + text[1:] if "aorta" not in text else "Segment that vessel."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_server():
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_paraphrase_through_an_http_endpoint_is_cached(demo_samples, fake_server, tmp_path):
    pairs = build_queries(demo_samples, ["referring"], seed=2)
    para = Paraphraser(fake_server, "fake", tmp_path / "cache")
    out = paraphrase_queries(pairs, para)
    calls = _FakeOpenAI.calls
    assert calls == len(pairs) and para.stats["requests"] == len(pairs)
    aorta = [q for _, q in out if q.structure == "aorta"][0]
    assert not aorta.text.startswith("Kindly")  # lost its target's name: template kept
    assert all(q.text.startswith("Kindly") for _, q in out if q.structure != "aorta")
    again = paraphrase_queries(pairs, Paraphraser(fake_server, "fake", tmp_path / "cache"))
    assert _FakeOpenAI.calls == calls + 1  # only the rejected one is asked again
    assert [q.text for _, q in again] == [q.text for _, q in out]


def test_paraphrase_falls_back_when_the_endpoint_is_down(demo_samples, tmp_path):
    para = Paraphraser("http://127.0.0.1:9/v1", "fake", tmp_path / "c", timeout_s=2)
    q = make_query(demo_samples[0], "referring", 0)
    assert para(q.text) == q.text and para.stats["fallback"] == 1

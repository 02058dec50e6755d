"""Facts and reasoning: position words from geometry, the fact check, the teacher."""

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np

from ibisagent.synth import reasoning as R
from ibisagent.synth.facts import click_region, position_words, state_facts
from ibisagent.synth.teacher import Teacher


def _masks():
    gt = np.zeros((90, 90), bool)
    gt[0:30, 60:90] = True  # the upper-right ninth
    mask = np.zeros_like(gt)
    mask[0:30, 75:90] = True  # covers half of it
    return gt, mask


def test_facts_come_from_geometry():
    assert position_words(0.1, 0.1) == "upper left" and position_words(0.5, 0.5) == "centre"
    assert position_words(0.9, 0.5) == "right" and position_words(0.5, 0.99) == "lower"
    gt, mask = _masks()
    f = state_facts("liver", gt, mask)
    assert (f.target_where, f.target_pct, f.coverage_pct, f.outside_pct) == ("upper right", 11, 50, 0)
    r = click_region(gt, mask, 67, 15, 1)
    assert r.share_pct == 50 and r.rel == "left of" and r.largest
    assert click_region(gt, mask, 10, 80, 1) is None  # not in a missed region


def test_generated_reasoning_passes_the_check_and_lies_fail_it():
    gt, mask = _masks()
    f = state_facts("liver", gt, mask)
    r = click_region(gt, mask, 67, 15, 1)
    texts = {R.click_reasoning(random.Random(s), f, 1, r, 2) for s in range(20)}
    assert len(texts) > 3  # varied wording
    for t in texts:
        assert R.check_reasoning(t, [f, r], "positive", "liver") is None, t
    good = next(iter(texts))
    assert "lower" in R.check_reasoning(good + " It is in the lower part.", [f, r], "positive", "liver")
    assert "percentage" in R.check_reasoning("The liver mask covers 93% of it.", [f, r], "positive", "liver")
    assert "negative point" in R.check_reasoning("I put a negative point on the liver.", [f], "positive", "liver")
    assert "liver" in R.check_reasoning("I add a positive point on the target here.", [f], "positive", "liver")


def test_reasoning_of_a_real_run_passes_the_check(synth_run):
    _, _, trajs = synth_run
    for t in trajs:
        for s in t.steps:
            if s.kind in ("positive", "negative") and s.tag == "" and "region" in s.facts:
                think = s.response.split("<think>")[1].split("</think>")[0].strip()
                f = {k: v for k, v in s.facts.items() if k != "region"}
                assert R.check_reasoning(think, [f, s.facts["region"]], s.kind, t.structure) is None, think


class _Teacher(BaseHTTPRequestHandler):
    replies: list = []
    calls = 0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["messages"][1]["content"].startswith("Facts:")
        type(self).calls += 1
        text = type(self).replies.pop(0)
        data = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_teacher_rewrites_are_checked_and_cached(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gt, mask = _masks()
        f = state_facts("liver", gt, mask)
        r = click_region(gt, mask, 67, 15, 1)
        draft = R.click_reasoning(random.Random(0), f, 1, r, 2)
        good = "Half of the liver, in the upper-right part of the image, is still missed, so I add a positive point."
        bad = "The liver is in the lower left part of the image; I add a positive point."
        _Teacher.replies = [good, bad]
        t = Teacher(f"http://127.0.0.1:{server.server_port}/v1", "m", str(tmp_path))
        assert t.rewrite(draft, [f, r], "positive", "liver", "a") == good
        assert t.rewrite(draft, [f, r], "positive", "liver", "b") == draft  # wrong position words: rejected
        assert t.rewrite(draft, [f, r], "positive", "liver", "a") == good and _Teacher.calls == 2  # cached
        assert t.stats["kept"] == 2 and t.stats["rejected"] == 1
    finally:
        server.shutdown()
    down = Teacher("http://127.0.0.1:9/v1", "m", str(tmp_path / "x"), timeout_s=2)
    assert down.rewrite(draft, [f, r], "positive", "liver", "c") == draft and down.stats["failed"] == 1

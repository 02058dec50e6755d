"""`ibisagent eval run` against a remote policy (the mock OpenAI-compatible server) and a remote
tool (the real app on loopback), with bounded concurrency; same results as one worker."""

from __future__ import annotations

import json
import threading

from typer.testing import CliRunner

from ibisagent.cli.main import app
from ibisagent.env.protocol import format_response
from ibisagent.testing.mock_chat_server import MockChatServer

CLICK = format_response("The target is near the centre.", "positive", 0.5, 0.55)
STOP = format_response("The mask covers it.", "stop", answer="Segmented.")


def scripted(body: dict, n: int) -> str:
    """Click on the first turn, stop on the refinement turn (a function of the request only)."""
    text = "".join(p.get("text", "") for p in body["messages"][-1]["content"] if isinstance(p, dict))
    return STOP if "refinement step" in text else CLICK


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_remote_policy_and_tool(server_url, demo_dir, tmp_path):
    runner = CliRunner()
    second, gate = threading.Event(), {"on": True}

    def reply(body: dict, n: int) -> str:
        """While the gate is on, the first request waits for a second one: proof of parallel episodes."""
        if gate["on"] and n == 1:
            second.wait(300)
        elif n > 1:
            second.set()
        return scripted(body, n)

    with MockChatServer(reply) as chat:
        args = ["eval", "run", "--data", str(demo_dir / "pairs.csv"), "--tool", server_url, "--limit", "4"]
        args += ["--policy", f"openai:{chat.url}", "--policy", "box", "--max-steps", "5", "--no-report"]
        res = runner.invoke(app, [*args, "--workers", "3", "--out", str(tmp_path / "a")])
        assert res.exit_code == 0, res.output
        assert second.is_set() and 1 < chat.peak <= 3  # parallel, and bounded: one request per worker
        gate["on"] = False
        res = runner.invoke(app, [*args, "--workers", "1", "--out", str(tmp_path / "b")])
        assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / "a" / "results.jsonl")
    assert len(rows) == 8 and not any(r["error"] for r in rows)
    vlm = [r for r in rows if r["policy"].startswith("openai:")]
    assert all(r["step_kinds"] == ["positive", "stop"] and r["stop_reason"] == "stop" for r in vlm)
    assert all(r["iou"] is not None for r in rows)
    assert max(r["iou"] for r in rows if r["policy"] == "box") > 0.5
    assert (tmp_path / "a" / "results.jsonl").read_bytes() == (tmp_path / "b" / "results.jsonl").read_bytes()
    meta = json.loads((tmp_path / "a" / "run.json").read_text())
    assert meta["status"] == "complete" and meta["tool"] == server_url


def test_eval_with_tool_server_down_fails_loudly(demo_dir, tmp_path):
    from ibisagent.app.background import free_port

    url = f"http://127.0.0.1:{free_port()}"
    args = ["eval", "run", "--data", str(demo_dir / "pairs.csv"), "--tool", url, "--policy", "centre"]
    res = CliRunner().invoke(app, [*args, "--limit", "2", "--no-report", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "tool server failed" in res.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["status"] == "incomplete"

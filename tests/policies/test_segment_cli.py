"""`ibisagent segment`: episodes printed as they run, files written, errors as one line, partial results kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ibisagent.cli.main import app
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.testing.mock_chat_server import MockChatServer

runner = CliRunner()


@pytest.fixture()
def files(tmp_path, small_case):
    img, gt, _ = small_case
    Image.fromarray(img).save(tmp_path / "scan.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "liver.png")
    return tmp_path / "scan.png", tmp_path / "liver.png"


def test_oracle_with_reference_reports_iou_per_step(files, tmp_path):
    image, ref = files
    out = tmp_path / "run"
    r = runner.invoke(
        app, ["segment", str(image), "-q", "Segment the liver", "--reference", str(ref), "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    ep = Episode.load(out / "episode.json")
    assert ep.stop_reason in ("stop", "max_steps", "repeat") and ep.steps[0].kind == "positive"
    assert r.output.count("IoU") >= len(ep.steps)
    assert "step  1: positive click" in r.output and "done:" in r.output
    for i in range(1, len(ep.steps) + 1):
        assert (out / f"step_{i:02d}.png").exists()
    mask = np.asarray(Image.open(out / "mask.png")) > 0
    assert np.array_equal(mask, ep.final_mask)
    assert "## Step 1: positive" in (out / "reasoning.md").read_text()


def test_openai_policy_end_to_end_and_server_failure_keeps_partial(files, tmp_path):
    image, _ = files
    click = format_response("Left lobe.", "positive", 0.4, 0.5)
    with MockChatServer(lambda body, n: click if n == 1 else 500) as srv:
        out = tmp_path / "srv"
        args = ["segment", str(image), "-q", "Segment the liver", "--policy", f"openai:{srv.url}#m", "--out", str(out)]
        r = runner.invoke(app, [*args, "--retries", "1"])
    assert r.exit_code == 1
    assert "HTTP 500" in r.output and "after 2 tries" in r.output and "1 step(s) kept" in r.output
    ep = json.loads((out / "episode.json").read_text())
    assert ep["stop_reason"] == "policy_error" and len(ep["steps"]) == 1 and (out / "mask.png").exists()


def test_garbage_model_output_ends_cleanly(files, tmp_path):
    image, _ = files
    with MockChatServer(lambda body, n: "I think the liver is here.") as srv:
        r = runner.invoke(
            app,
            ["segment", str(image), "-q", "liver?", "--policy", f"openai:{srv.url}#m", "--out", str(tmp_path / "g")],
        )
    assert r.exit_code == 0, r.output
    assert "<action> block missing" in r.output and "stopped by invalid" in r.output


def test_human_clicks_and_bad_input(files, tmp_path):
    image, ref = files
    out = tmp_path / "h"
    r = runner.invoke(
        app,
        ["segment", str(image), "-q", "liver", "--policy", "human", "--click", "p 0.45,0.5", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "stopped by stop" in r.output
    bad = [
        (["--policy", "nosuch"], "unknown policy"),
        (["--policy", f"compact:{tmp_path / 'none.pt'}"], "not found"),
        (["--policy", "oracle"], "give --reference"),
        (["--policy", "hf:/no/such/dir"], "no such model folder"),
        (["--reference", str(tmp_path / "missing.png")], "missing.png"),
    ]
    for extra, message in bad:
        r = runner.invoke(app, ["segment", str(image), "-q", "liver", "--out", str(tmp_path / "b"), *extra])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (extra, r.output)

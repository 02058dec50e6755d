"""The SAM2 tool inside the agent loop (env + oracle policy) and behind the CLI's --tool option."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ibisagent.cli.main import app
from ibisagent.env.env import IbisEnv
from ibisagent.env.episode import Episode
from ibisagent.policies.oracle import OraclePolicy
from ibisagent.policies.runner import run_episode

runner = CliRunner()


def test_oracle_episode_through_the_sam2_tool(sam2_tool, demo_samples):
    sample = next(s for s in demo_samples if s.structure == "liver")
    image, gt = sample.load()
    enc = sam2_tool.timings.encoder_calls
    dec = sam2_tool.timings.decoder_calls
    ep = run_episode(IbisEnv(sam2_tool, max_steps=4), OraclePolicy(1.0), image, "Segment the liver.", gt)
    assert ep.stop_reason == "max_steps" and len(ep.clicks) == 4
    assert sam2_tool.timings.decoder_calls - dec == 4
    assert sam2_tool.timings.encoder_calls - enc <= 1  # one embedding for the whole episode
    assert len(ep.iou_curve) == 4 and all(0.0 <= v <= 1.0 for v in ep.iou_curve)
    assert ep.final_mask.shape == gt.shape and ep.final_mask.dtype == bool
    back = Episode.from_json(ep.to_json())
    assert back.clicks == ep.clicks and np.array_equal(back.final_mask, ep.final_mask)


def test_refinement_episode_starts_from_a_given_mask(sam2_tool, demo_samples):
    image, gt = demo_samples[0].load()
    env = IbisEnv(sam2_tool, max_steps=2)
    _, info = env.reset(image, "Segment the liver.", gt, init_mask=gt)
    assert info["iou"] == 1.0
    assert tuple(env.logits.shape) == (1, 1, 32, 32)  # the given mask as the prior of the first click


def test_click_and_simulate_cli_with_sam2(tiny_spec, tmp_path, demo_dir):
    img = demo_dir / "images" / "15_X-Ray_chest.png"
    gray = tmp_path / "gray.png"
    Image.open(img).convert("L").resize((301, 211)).save(gray)  # grayscale, odd size
    out, ov = tmp_path / "m.png", tmp_path / "o.png"
    r = runner.invoke(
        app,
        ["click", str(gray), "--tool", tiny_spec, "--pos", "0.3,0.4", "--neg", "0.7,0.5", "--out", str(out)]
        + ["--overlay", str(ov)],
    )
    assert r.exit_code == 0, r.output
    m = np.asarray(Image.open(out))
    assert m.shape == (211, 301) and set(np.unique(m)) <= {0, 255} and ov.exists()

    summary = tmp_path / "s.json"
    r = runner.invoke(
        app,
        ["simulate", str(demo_dir), "--tool", tiny_spec, "--limit", "1", "--max-clicks", "2"]
        + ["--out", str(tmp_path / "run"), "--summary-json", str(summary)],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(summary.read_text())["n"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and 1 <= len(rows[0]["ious"]) <= 2


def test_cli_bad_sam2_spec_is_one_line(tiny_files, tmp_path, demo_dir):
    config, _ = tiny_files
    img = demo_dir / "images" / "15_X-Ray_chest.png"
    out = tmp_path / "m.png"
    spec = f"sam2:{config}:{tmp_path / 'w.pt'}"
    r = runner.invoke(app, ["click", str(img), "--tool", spec, "--pos", "0.5,0.5", "--out", str(out)])
    assert r.exit_code == 2 and "w.pt: no such checkpoint file" in r.output and "Traceback" not in r.output
    assert not out.exists()

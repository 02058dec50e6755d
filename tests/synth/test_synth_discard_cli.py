"""The Discard Mask protocol extension in the parser and the environment; the CLI."""

import numpy as np
from typer.testing import CliRunner

from ibisagent.cli.main import app
from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import format_check, format_response, parse_response


def test_discard_parses_and_formats():
    text = format_response("The given mask is another organ.", "discard")
    assert "<action>\nDiscard Mask\n</action>" in text
    assert parse_response(text).kind == "discard" and format_check(text) is None
    assert parse_response("<think>x</think><action>discard</action>").kind == "discard"
    assert parse_response("<think>x</think><action>Discard it all</action>").kind == "invalid"


def test_env_executes_discard(tool, tiny_data):
    from ibisagent.data.pairs import read_pairs_csv

    left, right = read_pairs_csv(tiny_data / "pairs.csv")[:2]
    image, gt = left.load()
    _, wrong = right.load()
    env = IbisEnv(tool)
    obs, info = env.reset(image, "Refine the left lung.", gt_mask=gt, init_mask=wrong)
    assert info["iou"] < 0.1
    env.step(format_response("a", "positive", 0.7, 0.5))
    obs, _, term, trunc, info = env.step(format_response("The mask is not the left lung.", "discard"))
    assert not term and not trunc and info["clicks"] == [] and not obs.mask.any() and env.logits is None
    assert np.array_equal(obs.image, image)  # no overlay left
    _, _, term, _, info = env.step(format_response("b", "positive", 0.7, 0.5))
    assert not term and len(info["clicks"]) == 1


def test_cli_runs_and_reports_bad_input(tiny_data, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["synth", str(tiny_data), "--out", str(tmp_path / "o"), "--mix", "bogus=1"])
    assert res.exit_code == 2 and "unknown kind" in res.output
    args = ["synth", str(tiny_data), "--out", str(tmp_path / "o"), "--limit", "1", "--max-clicks", "2"]
    args += ["--mix", "refine=0,self_correction=0,discard=0,vqa=1,negative=0", "--min-final-iou", "0"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "export" / "rl.parquet").is_file() and (tmp_path / "o" / "sharegpt.json").is_file()

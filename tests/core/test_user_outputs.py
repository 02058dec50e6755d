"""What a new user meets: outputs never land in the input's folder, tables fit 80 columns and
show only what was measured, `eval run` includes the shipped agent, the tiny test VLM is built on
demand, and `--help` names only what is shipped."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from ibisagent.cli.main import app

runner = CliRunner()


@pytest.fixture()
def inbox(tmp_path, demo_dir, monkeypatch):
    """A folder holding one demo image; the working directory is tmp_path."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(demo_dir / "images" / "06_CT_abdomen.png", folder / "ct.png")
    monkeypatch.chdir(tmp_path)
    return folder


def test_click_writes_under_runs_by_default(inbox, tmp_path):
    r = runner.invoke(app, ["click", str(inbox / "ct.png"), "--pos", "0.30,0.45"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "runs" / "click" / "ct_mask.png").exists()
    assert (tmp_path / "runs" / "click" / "ct_overlay.png").exists()
    # --out alone: the overlay goes beside it
    r = runner.invoke(app, ["click", str(inbox / "ct.png"), "--pos", "0.30,0.45", "--out", "elsewhere/liver.png"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "elsewhere" / "liver.png").exists() and (tmp_path / "elsewhere" / "liver_overlay.png").exists()
    assert [p.name for p in inbox.iterdir()] == ["ct.png"]


def test_segment_writes_under_runs_by_default(inbox, tmp_path):
    r = runner.invoke(app, ["segment", str(inbox / "ct.png"), "-q", "Segment the liver.", "--policy", "centre"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "runs" / "segment" / "ct"
    assert {"mask.png", "episode.json", "reasoning.md", "step_01.png"} <= {p.name for p in out.iterdir()}
    assert [p.name for p in inbox.iterdir()] == ["ct.png"]


def test_simulate_table_shows_only_measured_clicks_in_80_columns(tmp_path, demo_dir):
    r = runner.invoke(
        app, ["simulate", str(demo_dir), "--limit", "2", "--max-clicks", "10", "--out", str(tmp_path / "s")]
    )
    assert r.exit_code == 0, r.output
    assert "IoU@10" in r.output and "IoU@20" not in r.output
    assert "litemedsam[clicks,points+prior]" in r.output  # the tool and its settings, not eaten as markup
    assert max(len(line) for line in r.output.splitlines()) <= 80
    assert "…" not in r.output  # nothing cut


def test_eval_run_includes_the_shipped_agent():
    from ibisagent.cli.eval import DEFAULT_POLICIES

    assert DEFAULT_POLICIES[0] == "compact"
    r = runner.invoke(app, ["eval", "run", "--help"])
    assert "compact" in r.output


def test_tiny_vlm_is_built_on_demand(tmp_path):
    pytest.importorskip("transformers")
    from ibisagent.cli.train import ensure_tiny_model

    path = tmp_path / "runs" / "tiny-qwen25vl"
    ensure_tiny_model(str(path))
    assert (path / "config.json").exists()
    ensure_tiny_model(str(tmp_path / "some-model"))  # any other name is left alone
    assert not (tmp_path / "some-model").exists()


def all_commands() -> list[list[str]]:
    """Every command path of the CLI (groups included), from typer's click tree."""
    import typer.main

    def walk(cmd, prefix):
        out = [prefix] if prefix else []
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            out += walk(sub, [*prefix, name])
        return out

    return walk(typer.main.get_command(app), [])


def test_every_command_is_checked():
    names = {" ".join(c) for c in all_commands()}
    assert {"segment", "click", "simulate", "eval run", "train sft", "data inspect"} <= names


@pytest.mark.parametrize("cmd", all_commands(), ids=" ".join)
def test_help_names_only_what_is_shipped(cmd):
    r = runner.invoke(app, [*cmd, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    for stale in ("spec section", "shared/data", "tiny_vlm runs/"):
        assert stale not in text, (cmd, stale)

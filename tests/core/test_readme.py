"""The README is a user document that runs as written: every command block marked
`<!-- README test: runs -->` (the bundled-demo examples) is run from a fresh working directory
that sees the repository's files, so a drifted example fails CI. Also: no development history
and no paths to data users do not have, in the README or docs/."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARK = "<!-- README test: runs -->"


def marked_commands(text: str) -> list[str]:
    """Commands of the ```bash blocks right after a MARK line; comments and blanks dropped, the
    install step and the .venv/bin prefix stripped (the test runs inside the installed venv)."""
    commands = []
    for m in re.finditer(re.escape(MARK) + r"\n```bash\n(.*?)```", text, re.S):
        for line in m.group(1).splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            line = line.removeprefix("scripts/install.sh && ").removeprefix(".venv/bin/")
            commands.append(line)
    return commands


def test_readme_is_short_and_has_no_history():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    history = re.compile(r"\bstops? [0-9]+\b|runs/(rs|compact_v|cold)|shipped until|throw-away")
    for path in [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md"]:
        body = path.read_text()
        assert not history.search(body), (path.name, history.search(body).group(0))
        assert "shared/data" not in body, path.name  # our data folder, not the user's


def test_readme_has_the_two_commands():
    text = README.read_text()
    cmds = marked_commands(text)
    assert cmds and cmds[0].startswith("ibisagent segment ibisagent/assets/demo/")
    assert "```bash\nscripts/test.sh\n```" in text
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_examples_use_tracked_files_only():
    """What the bundled examples read is in a fresh clone: tracked by git, not built or downloaded."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split())
    for cmd in marked_commands(README.read_text()):
        for token in shlex.split(cmd):
            if token.startswith("ibisagent/"):
                path = token.rstrip("/")
                assert path in tracked or any(t.startswith(path + "/") for t in tracked), (cmd, token)


def test_readme_links_resolve():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), target


@pytest.mark.skipif(os.environ.get("IBISAGENT_SKIP_README_RUN") == "1", reason="IBISAGENT_SKIP_README_RUN=1")
def test_readme_bundled_examples_run(tmp_path):
    """Each marked command, as written, from a folder where ibisagent/ is the repository's."""
    (tmp_path / "ibisagent").symlink_to(ROOT / "ibisagent", target_is_directory=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    commands = marked_commands(README.read_text())
    assert len(commands) >= 8
    for cmd in commands:
        assert shlex.split(cmd)[0] == "ibisagent", cmd
        r = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    runs = tmp_path / "runs"
    for produced in (
        "demo/mask.png",
        "demo/reasoning.md",
        "segment/06_CT_abdomen/mask.png",
        "oracle/episode.json",
        "click/liver2.png",
        "sim/summary.json",
        "eval/report.html",
        "sheet.png",
    ):
        assert (runs / produced).exists(), produced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ibisagent", "runs"]  # nothing written elsewhere


def test_results_tables_match_the_shipped_reports():
    """docs/results.md's generated block is what scripts/results_tables.py makes of the shipped
    reports (rerun `scripts/results_tables.py --write docs/results.md` after retraining)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_tables", ROOT / "scripts" / "results_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = (ROOT / "docs" / "results.md").read_text()
    block = doc.split("<!-- tables:shipped -->\n", 1)[1].split("<!-- /tables:shipped -->", 1)[0]
    assert block.strip() == mod.shipped_tables().strip()

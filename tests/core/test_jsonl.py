"""The one JSONL writer: a torn last line of a killed run is cut before appending, never glued."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from ibisagent.io.jsonl import JsonlAppender, read_jsonl, truncate_torn_tail, write_jsonl


def test_torn_last_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "io')  # killed mid-row
    assert [r["id"] for r in read_jsonl(path)] == [1, 2]
    with JsonlAppender(path) as w:
        w.write({"id": 3})
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n{"id": 3}\n'
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]


def test_whole_last_row_without_newline_is_kept(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": 2}')
    assert truncate_torn_tail(path) == 0
    assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n'
    only = tmp_path / "one.jsonl"
    only.write_bytes(b'{"id": ')
    assert truncate_torn_tail(only) == 7 and only.read_bytes() == b""
    assert truncate_torn_tail(tmp_path / "missing.jsonl") == 0


def test_read_skips_non_objects_and_bad_bytes(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'[1, 2]\n\xff\xfe\n{"id": 1}\n"text"\n')
    assert read_jsonl(path) == [{"id": 1}]
    write_jsonl(path, [{"a": 1}, {"b": 2}])
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]


def test_kill_9_mid_run_loses_no_row_on_resume(tmp_path):
    """A writer killed at a random moment, then resumed: every row once, no corrupt line."""
    path = tmp_path / "rows.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from ibisagent.io.jsonl import JsonlAppender, read_jsonl
        done = {{r["i"] for r in read_jsonl({str(path)!r})}}
        w = JsonlAppender({str(path)!r})
        for i in range(400):
            if i not in done:
                w.write({{"i": i, "pad": "x" * 2000}})
                if i == 40:
                    print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with path.open("ab") as fh:  # as if the kill had landed mid-write
        fh.write(b'{"i": 9999, "pad": "xx')
    subprocess.run([sys.executable, "-c", script], check=True)
    lines = path.read_bytes().splitlines()
    rows = [json.loads(line) for line in lines]  # every line parses
    assert sorted(r["i"] for r in rows) == list(range(400))

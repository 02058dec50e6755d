"""JSONL files that survive crashes: one JSON object per line, appended and fsynced one row at a
time, so a process killed at any moment (kill -9, power loss) leaves at most one torn last line.

`JsonlAppender` cuts such a torn line off before it appends (else the next row would be glued to
it and lost as well); `read_jsonl` skips it; `write_jsonl` replaces a whole file atomically. Every
resumable writer of the project (eval, simulate, training logs) goes through this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ibisagent.io.images import atomic_write_bytes


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSONL file, in order; a torn or malformed line (an interrupted run)
    and lines that are not objects are skipped. A missing file gives []."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_torn_tail(path: str | Path) -> int:
    """Cut the bytes after the last newline of `path` (a line whose writer was killed mid-write)
    and return how many bytes were cut (0 when the file ends with a newline or does not exist).
    A last line that is a whole JSON object without its newline is kept and given one."""
    path = Path(path)
    try:
        fh = path.open("r+b")
    except FileNotFoundError:
        return 0
    with fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            fh.seek(keep)
            try:
                json.loads(fh.read(size - keep))
                complete = True
            except (json.JSONDecodeError, UnicodeDecodeError):
                complete = False
            if complete:
                fh.seek(size)
                fh.write(b"\n")
                keep = size
            else:
                fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep


class JsonlAppender:
    """Append rows to a JSONL file one line at a time, flushed and fsynced, after cutting a torn
    last line left by a killed run. Use as a context manager or call `close()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Replace `path` atomically with `rows`, one compact JSON object per line."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())

"""The files of an evaluation run and how to read them back.

A run folder holds
- `run.json`: the configuration, the sample count and `status` ("running", "incomplete", "complete");
- `results.jsonl`: one row per (sample, policy) episode, reproducible from the seed;
- `latency.jsonl`: one row per episode with wall-clock times (seconds), kept apart so the
  results file is byte-identical across runs with the same seed;
- `summary.json`, `report.md`, `report.html`, `report_assets/`: derived, rewritten by `report`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ibisagent.errors import IbisInputError
from ibisagent.io.images import atomic_write_bytes
from ibisagent.io.jsonl import read_jsonl

RUN_JSON = "run.json"
RESULTS = "results.jsonl"
LATENCY = "latency.jsonl"


@dataclass
class RunData:
    """A run read back: `meta` from run.json, result and latency rows (one per (key, policy))."""

    path: Path
    meta: dict
    rows: list[dict]
    latency: list[dict] = field(default_factory=list)

    @property
    def policies(self) -> list[str]:
        return list(self.meta.get("policies", []))

    @property
    def expected(self) -> int:
        return int(self.meta.get("n_samples", 0)) * len(self.policies)

    @property
    def complete(self) -> bool:
        """True only when run.json says complete and every expected episode has a row."""
        return self.meta.get("status") == "complete" and len(self.rows) >= self.expected

    def rows_of(self, policy: str) -> list[dict]:
        return [r for r in self.rows if r["policy"] == policy]


def unique_rows(rows: list[dict]) -> list[dict]:
    """One row per (key, policy), the last one written winning."""
    keep: dict[tuple[str, str], dict] = {}
    for r in rows:
        if isinstance(r, dict) and "key" in r and "policy" in r:
            keep[(r["key"], r["policy"])] = r
    return list(keep.values())


def load_run(path: str | Path) -> RunData:
    """Read a run folder (or its results.jsonl). Errors name the folder and what is missing."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    meta_path = path / RUN_JSON
    if not meta_path.exists() and any(path.glob("fold_*.json")):
        return load_lso_run(path)
    if not meta_path.exists():
        raise IbisInputError(path, f"not an evaluation run (no {RUN_JSON}; make one with: ibisagent eval run)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IbisInputError(meta_path, f"not valid JSON ({exc})") from None
    return RunData(
        path=path,
        meta=meta,
        rows=unique_rows(read_jsonl(path / RESULTS)),
        latency=unique_rows(read_jsonl(path / LATENCY)),
    )


def load_lso_run(path: Path) -> RunData:
    """A leave-source-out run folder (`ibisagent eval lso`: one OUT/fold_K.json per fold done) read as
    a run: a row {key, policy, iou} per target and policy of every fold done. Only the IoU is kept
    per target (meta "metrics"); "complete" once every fold of its settings is done."""
    rows, policies, folds = [], [], 0
    for fold_file in sorted(path.glob("fold_*.json")):
        try:
            record = json.loads(fold_file.read_text())
            results = record["results"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise IbisInputError(fold_file, f"not a leave-source-out fold record ({exc})") from None
        folds = int(record.get("config", {}).get("folds", 0))
        for policy, res in results.items():
            policies += [policy] if policy not in policies else []
            rows += [{"key": k, "policy": policy, "iou": v} for k, v in res.get("per_item", {}).items()]
    done = len(list(path.glob("fold_*.json")))
    meta = {
        "policies": policies,
        "n_samples": len({r["key"] for r in rows}),
        "status": "complete" if folds and done >= folds else "running",
        "metrics": ["iou"],
        "kind": "leave-source-out",
    }
    return RunData(path=path, meta=meta, rows=unique_rows(rows))


def write_meta(path: Path, meta: dict) -> None:
    atomic_write_bytes(path / RUN_JSON, (json.dumps(meta, indent=1) + "\n").encode())

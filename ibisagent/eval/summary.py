"""Aggregate an evaluation run's rows into per-policy, per-modality and per-target figures.

Every number comes from `ibisagent.metrics` (and `stats` for intervals). IoU values are
fractions in [0, 1]; times are seconds; NoC counts clicks (the box prompt counts as one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from ibisagent.eval.results import RunData
from ibisagent.eval.stats import bootstrap_ci
from ibisagent.metrics import answer_accuracy, noc, stop_scores, summarize_curves

KS = (1, 3, 5, 10, 20)


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def group_figures(rows: list[dict], max_steps: int) -> dict:
    """n, mean IoU / Dice and mean NoC@85 of finished rows (for per-modality and per-target tables)."""
    return {
        "n": len(rows),
        "iou": _mean([r["iou"] for r in rows]),
        "dice": _mean([r["dice"] for r in rows]),
        "noc85": _mean([noc(r["ious"], 0.85, max_steps) for r in rows]),
    }


def summarize_policy(rows: list[dict], latency: list[dict], max_steps: int, seed: int = 0) -> dict:
    """All figures of one policy's rows (error rows are counted, not scored)."""
    ok = [r for r in rows if not r.get("error")]
    lo, hi = bootstrap_ci([r["iou"] for r in ok], seed=seed)
    curves = summarize_curves([r["ious"] for r in ok], ks=KS, max_clicks=max_steps)
    total_steps = sum(r["steps"] for r in ok)
    out = {
        "n": len(ok),
        "errors": len(rows) - len(ok),
        "iou": _mean([r["iou"] for r in ok]),
        "iou_ci": [lo, hi],
        "dice": _mean([r["dice"] for r in ok]),
        "precision": _mean([r["precision"] for r in ok]),
        "recall": _mean([r["recall"] for r in ok]),
        "steps": _mean([r["steps"] for r in ok]),
        "return": _mean([r.get("return") for r in ok]),  # None: no action taken, or a run from before returns
        "clicks": _mean([len(r["clicks"]) for r in ok]),
        **stop_scores([r["stop_reason"] for r in ok], [r["iou"] for r in ok]),
        "format_error_rate": sum(r["format_errors"] for r in ok) / total_steps if total_steps else float("nan"),
        "answers": answer_accuracy([r.get("answer") for r in ok], [r.get("expected_answer") for r in ok]),
        "mean_iou_at": curves["mean_iou_at"],
        "noc": curves["noc"],
        "stop_reasons": dict(sorted(Counter(r["stop_reason"] for r in ok).items(), key=lambda kv: str(kv[0]))),
        "latency": {k: _mean([d[k] for d in latency]) for k in ("policy_s", "encoder_s", "decoder_s", "episode_s")},
        "per_modality": _groups(ok, "modality", max_steps),
        "per_target": _groups(ok, "target", max_steps),
        "per_kind": _groups(ok, "kind", max_steps),
    }
    return out


def _groups(rows: list[dict], field: str, max_steps: int) -> dict:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get(field)), []).append(r)
    return {g: group_figures(rs, max_steps) for g, rs in sorted(groups.items())}


def summarize_run(run: RunData) -> dict:
    """`{"status", "complete", "episodes", "expected", "errors", "policies": {spec: figures}}`."""
    max_steps = int(run.meta.get("max_steps", 20))
    seed = int(run.meta.get("seed", 0))
    policies = {}
    for p in run.policies:
        lat = [d for d in run.latency if d["policy"] == p]
        policies[p] = summarize_policy(run.rows_of(p), lat, max_steps, seed)
    return {
        "status": run.meta.get("status"),
        "complete": run.complete,
        "episodes": len(run.rows),
        "expected": run.expected,
        "errors": sum(1 for r in run.rows if r.get("error")),
        "skipped_at_load": len(run.meta.get("skipped_at_load", [])),
        "max_steps": max_steps,
        "policies": policies,
    }


def completeness_note(run: RunData) -> str | None:
    """A warning line when the run is not finished, else None."""
    if run.complete:
        return None
    return (
        f"INCOMPLETE RUN: {len(run.rows)} of {run.expected} episodes finished (status: "
        f"{run.meta.get('status')}); figures cover only the finished episodes. Rerun the same "
        "`ibisagent eval run` command to finish it."
    )

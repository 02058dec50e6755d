"""Compare two evaluation runs (or two policies) episode by episode, with bootstrap intervals.

Episodes are paired by sample key; only samples finished without error on both sides count.
A difference is B minus A; for NoC and steps lower is better, for IoU, Dice and the return (the
paper's reward, averaged over an episode's actions) higher.
"""

from __future__ import annotations

from ibisagent.errors import IbisInputError
from ibisagent.eval.results import RunData
from ibisagent.eval.stats import N_BOOT, paired_difference
from ibisagent.metrics import iou_at, noc

# metric name -> (value of a row given max steps, higher is better)
METRICS = {
    "iou": (lambda r, m: r["iou"], True),
    "iou1": (lambda r, m: iou_at(r["ious"], 1), True),  # after the first action: where it clicks before seeing a mask
    "dice": (lambda r, m: r["dice"], True),
    "noc85": (lambda r, m: noc(r["ious"], 0.85, m), False),
    "noc90": (lambda r, m: noc(r["ious"], 0.90, m), False),
    "steps": (lambda r, m: r["steps"], False),
    "return": (lambda r, m: r["return"] or 0.0, True),  # an episode without actions earned nothing
}


def policy_pairs(a: RunData, b: RunData, policy_a: str | None, policy_b: str | None) -> list[tuple[str, str]]:
    """Which (policy of A, policy of B) to compare: the ones named, else every policy in both."""
    if policy_a or policy_b:
        pa = policy_a or policy_b
        pb = policy_b or policy_a
        for run, p in ((a, pa), (b, pb)):
            if p not in run.policies:
                raise IbisInputError(p, f"not a policy of {run.path} ({', '.join(run.policies)})")
        return [(pa, pb)]
    common = [p for p in a.policies if p in b.policies]
    if not common:
        raise IbisInputError(f"{a.path} vs {b.path}", "no policy in common; name them with --policy-a and --policy-b")
    return [(p, p) for p in common]


def compare_runs(
    a: RunData,
    b: RunData,
    policy_a: str | None = None,
    policy_b: str | None = None,
    metrics: tuple[str, ...] = ("iou", "dice", "noc85", "steps"),
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> list[dict]:
    """Rows of {policy_a, policy_b, metric, n, mean_a, mean_b, diff, low, high, better}."""
    for m in metrics:
        if m not in METRICS:
            raise IbisInputError(m, f"unknown metric; choose from {', '.join(METRICS)}")
    max_a, max_b = int(a.meta.get("max_steps", 20)), int(b.meta.get("max_steps", 20))
    out = []
    for pa, pb in policy_pairs(a, b, policy_a, policy_b):
        ra = {r["key"]: r for r in a.rows_of(pa) if not r.get("error")}
        rb = {r["key"]: r for r in b.rows_of(pb) if not r.get("error")}
        keys = sorted(ra.keys() & rb.keys())
        for m in metrics:
            if m == "return" and any("return" not in r for r in (*ra.values(), *rb.values())):
                raise IbisInputError(m, "not recorded in these runs (written by an older ibisagent; rerun them)")
            fn, higher = METRICS[m]
            d = paired_difference(
                [fn(ra[k], max_a) for k in keys], [fn(rb[k], max_b) for k in keys], n_boot=n_boot, seed=seed
            )
            if d["n"] and (d["low"] > 0 or d["high"] < 0):
                better = "B" if (d["diff"] > 0) == higher else "A"
            else:
                better = "no clear difference"
            out.append({"policy_a": pa, "policy_b": pb, "metric": m, **d, "better": better})
    return out

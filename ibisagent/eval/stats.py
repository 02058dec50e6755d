"""Bootstrap confidence intervals for means and paired differences (percentile method).

Resampling is seeded, so the same numbers give the same interval on every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BOOT = 2000


def bootstrap_ci(
    values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """(low, high) percentile interval of the mean of `values`; (nan, nan) for no values, and
    the value itself twice for a single one (no spread can be estimated)."""
    x = np.asarray([v for v in values if v is not None], np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_difference(
    a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of b - a over paired items with its bootstrap interval (items resampled together).

    `{"n", "mean_a", "mean_b", "diff", "low", "high"}`; `diff` > 0 means b is higher.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    xa, xb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if xa.size == 0:
        nan = float("nan")
        return {"n": 0, "mean_a": nan, "mean_b": nan, "diff": nan, "low": nan, "high": nan}
    lo, hi = bootstrap_ci(xb - xa, n_boot=n_boot, seed=seed, level=level)
    return {
        "n": int(xa.size),
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "diff": float((xb - xa).mean()),
        "low": lo,
        "high": hi,
    }

"""New metrics (stops, yes/no answers) and the bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ibisagent.eval.stats import bootstrap_ci, paired_difference
from ibisagent.metrics import answer_accuracy, stop_scores, yes_no


def test_stop_scores():
    s = stop_scores(["stop", "stop", "max_steps", "invalid"], [0.9, 0.5, 0.95, 0.1])
    assert s["self_stop_rate"] == 0.5 and s["stop_accuracy"] == 0.5
    assert math.isnan(stop_scores(["max_steps"], [0.9])["stop_accuracy"])
    assert math.isnan(stop_scores([], [])["self_stop_rate"])


def test_yes_no_and_answer_accuracy():
    assert yes_no("Yes, there is a tumour.") == "yes"
    assert yes_no("No target found.") == "no"
    assert yes_no("The nose is segmented.") is None  # 'no' only as a word
    assert yes_no(None) is None
    acc = answer_accuracy(["yes", "no tumour", "The liver.", "yes"], ["yes", "yes", "no", None])
    assert acc == {"n": 3, "accuracy": pytest.approx(1 / 3)}
    assert answer_accuracy(["yes"], [None])["n"] == 0


def test_bootstrap_ci_contains_the_mean_and_is_reproducible():
    x = np.random.default_rng(0).normal(0.7, 0.1, 200)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi and hi - lo < 0.05
    assert bootstrap_ci(x) == (lo, hi)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_paired_difference_sees_a_consistent_gain():
    a = np.linspace(0.2, 0.8, 50)
    d = paired_difference(a, a + 0.05)
    assert d["diff"] == pytest.approx(0.05) and d["low"] == pytest.approx(0.05) and d["n"] == 50
    noisy = paired_difference(a, a + np.random.default_rng(1).normal(0, 0.1, 50))
    assert noisy["low"] < 0 < noisy["high"]
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])

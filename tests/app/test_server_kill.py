"""A real `ibisagent serve` process under the hostile catalogue (bench/bench_hostile.py, quick
settings): the server must not die, answer no 5xx, keep /healthz answering, and one session's
clicking must grow it by no more than its configured byte bound."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_hostile.py"


def test_server_survives_the_catalogue_and_stays_in_its_memory_bound():
    spec = importlib.util.spec_from_file_location("bench_hostile", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(side=1024, actions=8, overlays=False)
    assert result["deaths"] == 0 and result["server_errors"] == 0 and result["healthz_failures"] == 0, result
    assert all(400 <= status < 500 for status in result["cases"].values()), result["cases"]
    assert result["rss_growth_mib"] <= result["bound_mib"], result
    assert result["ok"], result

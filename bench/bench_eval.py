"""Evaluation harness throughput: samples per second with 1 and with 2 worker processes.

    python bench/bench_eval.py [--data PATH] [--limit 9] [--policy oracle:0.9 --policy box ...]

Each setting runs the whole harness (fresh output folder, tool loading and worker start-up
included) on the same samples; with W workers each worker gets CPUs / W torch threads.
Prints one table: wall seconds, samples/s, episodes/s and the speed-up over 1 worker, and
checks that both settings wrote identical results.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DEMO))
    ap.add_argument("--limit", type=int, default=9)
    ap.add_argument("--policy", action="append", default=None)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    policies = args.policy or ["oracle:0.9", "box", "centre", "random"]

    from ibisagent.eval.harness import RunConfig, run_eval
    from ibisagent.eval.results import RESULTS

    cpus = os.cpu_count() or 1
    rows, outputs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            cfg = RunConfig(
                data=[args.data],
                policies=policies,
                max_steps=args.max_steps,
                workers=w,
                threads=max(1, cpus // w),
                limit=args.limit,
                tool_kwargs={"strategy": "points+prior"},
            )
            t0 = time.perf_counter()
            run = run_eval(cfg, Path(tmp) / f"w{w}")
            wall = time.perf_counter() - t0
            n = int(run.meta["n_samples"])
            rows.append((w, cfg.threads, n, len(run.rows), wall))
            outputs.append((run.path / RESULTS).read_bytes())
    base = rows[0][4]
    print(f"policies: {' '.join(policies)}; data: {args.data}; {cpus} CPUs")
    print(
        f"{'workers':>7} {'threads':>7} {'samples':>7} {'episodes':>8} {'wall s':>7} {'samples/s':>9} {'eps/s':>6} {'speed-up':>8}"
    )
    for w, t, n, e, wall in rows:
        print(f"{w:>7} {t:>7} {n:>7} {e:>8} {wall:>7.1f} {n / wall:>9.3f} {e / wall:>6.2f} {base / wall:>8.2f}")
    same = all(o == outputs[0] for o in outputs)
    print(f"identical results across worker counts: {same}")


if __name__ == "__main__":
    main()

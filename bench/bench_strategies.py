"""Which prompt strategy needs the fewest oracle clicks? One table over weights x strategies.

    python bench/bench_strategies.py ../shared/data/biomedparse_demo/pairs.csv --max-clicks 10

Every (weights, strategy) pair runs the reference click simulator on the same pairs; the image
encoder runs once per image for the whole table (one shared embedding cache).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--max-clicks", type=int, default=10)
    ap.add_argument("--weights", nargs="+", default=["original", "clicks"])
    ap.add_argument(
        "--strategies", nargs="+", default=["points", "points+prior", "box", "box+points", "box+points+prior"]
    )
    ap.add_argument("--json", type=Path, help="also write the table as JSON")
    args = ap.parse_args()

    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.env.env import IbisEnv
    from ibisagent.eval.interactive import simulate_sample, summarize_rows
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    samples = read_pairs_csv(args.pairs)
    shared_cache = None
    table = []
    print(f"{len(samples)} pairs, oracle clicks up to {args.max_clicks}")
    print(
        f"{'weights':<10}{'strategy':<18}{'IoU@1':>7}{'IoU@3':>7}{'IoU@5':>7}{'IoU@10':>7}{'NoC80':>7}{'NoC85':>7}{'NoC90':>7}"
    )
    for w in args.weights:
        tool = LiteMedSAMTool(weights=w, cache_entries=256)
        if shared_cache is None:
            shared_cache = tool.cache
        tool.cache = shared_cache
        for strat in args.strategies:
            tool.strategy = strat
            env = IbisEnv(tool, max_steps=args.max_clicks)
            rows = [simulate_sample(env, s, args.max_clicks) for s in samples]
            s = summarize_rows(rows, args.max_clicks)
            m, n = s["mean_iou_at"], s["noc"]
            print(
                f"{w:<10}{strat:<18}{m['1']:7.3f}{m['3']:7.3f}{m['5']:7.3f}{m['10']:7.3f}{n['80']:7.2f}{n['85']:7.2f}{n['90']:7.2f}",
                flush=True,
            )
            table.append({"weights": w, "strategy": strat, **s})
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()

"""Held-out episodes of compact-policy weights from the query alone (the figures of
`ibisagent train compact`, re-runnable for any weights file).

    python bench/eval_compact_heldout.py ../shared/data --weights ibisagent/policies/weights/compact_policy.pt \
        [--absent-only] [--max-steps 8]

Same split by image as `train compact` (15% held out); embeddings from its disk cache. Prints mean
IoU per category on present targets, and the share of absent-target questions (a structure that
cannot appear in the image) answered by stopping with "no".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--weights", nargs="+", default=["ibisagent/policies/weights/compact_policy.pt"])
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--heldout", type=int, default=15)
    ap.add_argument("--absent-only", action="store_true")
    from ibisagent.train import DEFAULT_CACHE_DIR

    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = ap.parse_args()

    from ibisagent.cli.train import collect_pairs
    from ibisagent.data.splits import split_by_image
    from ibisagent.train.compact import evaluate_absent, evaluate_compact
    from ibisagent.train.embedding_cache import cache_path

    _, held = split_by_image(collect_pairs(args.data), args.heldout)
    emb_files = {s.image: cache_path(args.cache_dir, s.image) for s in held}
    emb_files = {k: v for k, v in emb_files.items() if v.exists()}
    for w in args.weights:
        spec = f"compact:{w}"
        out = {"weights": w}
        if not args.absent_only:
            res = evaluate_compact(spec, held, emb_files, args.max_steps)
            out |= {k: res[k] for k in ("n", "mean_iou", "mean_steps", "per_category")}
        out["absent"] = evaluate_absent(spec, held, emb_files, args.max_steps)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

"""Does the GRPO stage beat SFT alone, beyond the luck of one seed? Train the RL stage of the
compact policy from the same SFT weights with several seeds and compare each with SFT on the
held-out split (query alone, the figures `ibisagent train compact` reports).

    python bench/compact_rl_seeds.py ../shared/data --sft runs/compact_v12/compact_policy.pt \
        --seeds 0 1 2 --minutes 10 --out runs/compact_rl_seeds
    python bench/compact_rl_seeds.py ../shared/data --sft runs/rs10/compact_policy.pt --rl-split 10 \
        --seeds 0 1 2 3 --out runs/rs10_seeds    # SFT of `train compact --rl-split 10 --out runs/rs10`

Each seed runs `train.compact_rl.train_compact_rl` with the default `CompactRLConfig` (GRPO on
the belief net's head) on the SFT training images, as `train compact` does (with `--rl-split PCT`:
on the training images that an SFT run with the same `--rl-split` never saw), and writes
OUT/seedN/compact_policy_rl.pt. Held-out results are kept in OUT (sft.json, seedN/heldout.json):
a rerun reuses finished seeds and evaluations. Prints one JSON line per seed (with the paired
difference against SFT over the same targets and its 95% bootstrap interval), then a summary:
the SFT mean IoU, each seed's, their mean gain over SFT, how many seeds beat it, and the paired
difference of the seeds' IoU averaged per target against SFT (the recipe's gain with the luck of
one RL seed averaged out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def heldout(path: Path, weights: Path, held, emb_files, max_steps: int) -> dict:
    """Held-out present-target episodes of `weights`, cached in `path` (JSON)."""
    from ibisagent.io.images import atomic_write_bytes
    from ibisagent.train.compact import evaluate_compact

    if path.exists():
        return json.loads(path.read_text())
    res = evaluate_compact(f"compact:{weights}", held, emb_files, max_steps)
    atomic_write_bytes(path, json.dumps(res, indent=1).encode())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--sft", type=Path, required=True, help="SFT weights (compact_policy.pt of a train compact run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--minutes", type=float, default=10.0, help="GRPO minutes per seed")
    ap.add_argument("--out", type=Path, default=Path("runs/compact_rl_seeds"))
    ap.add_argument("--heldout", type=int, default=15)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument(
        "--rl-split",
        type=int,
        default=0,
        help="GRPO on this percent of the training images (the --rl-split of `train compact`: images its SFT never saw)",
    )
    from ibisagent.train import DEFAULT_CACHE_DIR

    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = ap.parse_args()
    if not args.sft.exists():
        raise SystemExit(f"{args.sft}: no such SFT weights (train them with: ibisagent train compact)")

    import numpy as np

    from ibisagent.data.splits import validation_split
    from ibisagent.policies.compact import load_net
    from ibisagent.train.compact import CompactTrainConfig, build_examples, embed_query_texts, paired_stages
    from ibisagent.train.compact_rl import CompactRLConfig, train_compact_rl
    from ibisagent.train.tool_pipeline import split_and_embed

    _, train, held, emb_files = split_and_embed(args.data, args.heldout, args.cache_dir)
    if args.rl_split:
        train = validation_split(train, args.heldout, args.rl_split)[1]
    args.out.mkdir(parents=True, exist_ok=True)
    sft_res = heldout(args.out / "sft.json", args.sft, held, emb_files, args.max_steps)
    sft = sft_res["mean_iou"]
    print(json.dumps({"stage": "sft", "mean_iou": sft}), flush=True)
    examples = None
    results, per_item = {}, {}
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        weights = out / "compact_policy_rl.pt"
        if not weights.exists():
            if examples is None:  # loaded once, and only when a seed still has to train
                pos, _, feats, _ = build_examples(train, emb_files, CompactTrainConfig().query_variants, 0, None, 0)
                examples = pos, feats, embed_query_texts(pos, [])
            pos, feats, text_emb = examples
            cfg = CompactRLConfig(minutes=args.minutes, seed=seed)
            train_compact_rl(load_net(args.sft), pos, feats, text_emb, out, cfg)
        res = heldout(out / "heldout.json", weights, held, emb_files, args.max_steps)
        results[seed], per_item[seed] = res["mean_iou"], res["per_item"]
        cats = {k: round(v["mean_iou"], 3) for k, v in res["per_category"].items()}
        d = paired_stages(sft_res, res)
        line = {"stage": f"sft+rl seed {seed}", "mean_iou": res["mean_iou"], "per_category": cats}
        line["vs_sft"] = {k: round(d[k], 4) for k in ("diff", "low", "high")}
        print(json.dumps(line), flush=True)
    gains = [v - sft for v in results.values()]
    summary = {
        "sft": round(sft, 4),
        "sft+rl": {s: round(v, 4) for s, v in results.items()},
        "mean_gain": round(sum(gains) / len(gains), 4),
        "seeds_beating_sft": f"{sum(g > 0 for g in gains)}/{len(gains)}",
    }
    # The seeds' IoU averaged per target against SFT: the recipe's gain, its RL seed's luck averaged out
    # (the interval is then the targets' sampling alone).
    shared = set.intersection(*(set(v) for v in per_item.values()))
    pooled = paired_stages(sft_res, {"per_item": {i: np.mean([v[i] for v in per_item.values()]) for i in shared}})
    summary["seed_mean_vs_sft"] = {k: round(pooled[k], 4) for k in ("diff", "low", "high")}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

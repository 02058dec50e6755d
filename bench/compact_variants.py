"""Compare belief-net variants of the compact policy on a validation split carved from the
*training* images, so the held-out split that `train compact` reports stays untouched.

    python bench/compact_variants.py ../shared/data --minutes 10 --variants '{}' '{"dilations": [1, 2, 4, 8]}'

A variant is a JSON object of `train.compact.CompactTrainConfig` fields that differ from the
defaults ('{}' is the shipped recipe). The validation images are `data.splits.validation_split`
of the training images; each variant trains its SFT stage for `--minutes` on the rest, then
prints one JSON line:
its belief-map IoU on the validation targets (thresholded 64 x 64 belief vs the reference mask in
the tool's 256 x 256 frame, every query text of a target) and the mean IoU of whole episodes from
the referring query (the figure `train compact` reports), per category.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def belief_iou(weights: Path, positives, feats, text_emb) -> dict:
    """Mean IoU of the thresholded belief map over every (target, query text) of `positives`."""
    import torch
    import torch.nn.functional as F

    from ibisagent.metrics import iou
    from ibisagent.policies.compact import load_net

    net = load_net(weights)
    ious = []
    with torch.inference_mode():
        for key, _, texts, t256 in positives:
            logits = net.belief(
                net.reduce(feats[key].float()[None]).expand(len(texts), -1, -1, -1),
                torch.stack([text_emb[t] for t in texts]),
            )
            pred = F.interpolate(logits, size=t256.shape, mode="bilinear", align_corners=False)[:, 0] > 0
            ious.extend(iou(p.numpy(), t256) for p in pred)
    return {"belief_iou": float(np.mean(ious)), "n_queries": len(ious)}


def variant_config(spec: str, minutes: float):
    """A JSON object of CompactTrainConfig overrides -> (config, folder name such as
    "dropout0.1" or "dilations1-2-4-8"; "default" for '{}'). Exits with a message on a bad spec."""
    from dataclasses import fields

    from ibisagent.train.compact import CompactTrainConfig

    known = {f.name for f in fields(CompactTrainConfig)}
    try:
        overrides = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"variant {spec!r} is not JSON: {exc}") from None
    if not isinstance(overrides, dict) or set(overrides) - known:
        raise SystemExit(f"variant {spec!r}: give a JSON object of these fields: {', '.join(sorted(known))}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    name = "_".join(k + ("-".join(map(str, v)) if isinstance(v, tuple) else str(v)) for k, v in overrides.items())
    return CompactTrainConfig(**({"minutes": minutes} | overrides)), name or "default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--minutes", type=float, default=10.0, help="SFT minutes per variant")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["{}"],
        help="one variant per entry: a JSON object of CompactTrainConfig fields, e.g. '{\"dropout\": 0.1}'",
    )
    ap.add_argument("--heldout", type=int, default=15)
    ap.add_argument("--val", type=int, default=10, help="percent of images (after the held-out ones) for validation")
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs/compact_variants"))
    from ibisagent.train import DEFAULT_CACHE_DIR

    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = ap.parse_args()

    import torch

    from ibisagent.data.splits import validation_split
    from ibisagent.train.compact import (
        CompactTrainConfig,
        build_examples,
        embed_query_texts,
        evaluate_compact,
        train_compact,
    )
    from ibisagent.train.compact_pipeline import mirrored_examples
    from ibisagent.train.tool_pipeline import split_and_embed

    _, train, _, emb_files = split_and_embed(args.data, args.heldout, args.cache_dir)
    fit, val = validation_split(train, args.heldout, args.val)
    cfg0 = CompactTrainConfig()
    pos, neg, feats, _ = build_examples(fit, emb_files, cfg0.query_variants, cfg0.seed, None, cfg0.absent_per_image)
    vpos, _, vfeats, _ = build_examples(val, emb_files, cfg0.query_variants, cfg0.seed, None, 0)
    text_emb = embed_query_texts(pos + vpos, neg)
    print(f"{len(pos)} training targets, {len(vpos)} validation targets ({len(val)} pairs)", flush=True)
    configs = [variant_config(spec, args.minutes) for spec in args.variants]
    mpos, mfeats = mirrored_examples(fit, args.cache_dir, cfg0) if any(c.mirror for c, _ in configs) else ([], {})
    text_emb = embed_query_texts(mpos, [], known=text_emb) if mpos else text_emb
    for spec, (cfg, name) in zip(args.variants, configs):
        train_pos, train_feats = (pos + mpos, feats | mfeats) if cfg.mirror else (pos, feats)

        def log(message: str, name=name) -> None:  # only the share of variance the reduction keeps
            if "principal components" in message:
                print(f"{name}: {message}", flush=True)

        weights = train_compact(train_pos, neg, train_feats, args.out / name, cfg, log=log, text_emb=text_emb)
        steps = torch.load(weights, map_location="cpu", weights_only=True)["steps"]
        res = {"variant": json.loads(spec), "minutes": args.minutes, "steps": steps}
        res |= belief_iou(weights, vpos, vfeats, text_emb)
        ep = evaluate_compact(f"compact:{weights}", val, emb_files, args.eval_steps)
        res |= {
            "episode_iou": ep["mean_iou"],
            "per_category": {k: round(v["mean_iou"], 3) for k, v in ep["per_category"].items()},
        }
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()

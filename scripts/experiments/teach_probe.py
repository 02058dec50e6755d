"""Experiment (docs/experiments.md, "teaching"): on a finished fold of `ibisagent eval lso`, how well
does each source's belief come out of 5 of its pairs: the fold's belief net for the query, against
an exemplar probe (`policies.exemplar_probe`) fitted on those 5 pairs alone? Belief IoU (the map
thresholded at 50% against the target's 64 x 64 cells) on the source's evaluation targets, and how
often the probe's domain check covers the source's own images and the other sources' images.

    # after: IBISAGENT_ENCODER_PRECISION=bf16 ibisagent eval lso DATA --out runs/lso --fold 0
    IBISAGENT_ENCODER_PRECISION=bf16 python scripts/experiments/teach_probe.py DATA --lso runs/lso --fold 0

A minute or two on 2 cores with a warm embedding cache (the one `eval lso` fills).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.policies.belief_net import load_net, pool_features
    from ibisagent.policies.exemplar_probe import fit_probe
    from ibisagent.policies.text_encoder import embed_texts
    from ibisagent.train import DEFAULT_CACHE_DIR
    from ibisagent.train.compact.sft import build_examples
    from ibisagent.train.embedding_cache import cached_embeddings
    from ibisagent.train.leave_source_out import LSOConfig, plan, teach_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--lso", type=Path, required=True)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--radius-scale", type=float, default=1.5)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--max-radius", type=float, default=0.9)
    ap.add_argument("--raw", action="store_true", help="fit on the 256-channel embedding, not its 64 components")
    args = ap.parse_args()

    record = json.loads((args.lso / f"fold_{args.fold}.json").read_text())
    cfg = LSOConfig(**{**record["config"], "baselines": tuple(record["config"]["baselines"])})
    net = load_net(args.lso / f"fold_{args.fold}" / "compact_policy.pt")
    samples = collect_pairs(args.data)
    fold_of, _, targets = plan(samples, cfg)
    emb_files = cached_embeddings(samples, DEFAULT_CACHE_DIR)

    def tensors(items):
        pos, _, feats, _ = build_examples(items, emb_files, 1, 0, None, 0)
        f = torch.stack([feats[p[0]].float() for p in pos])
        with torch.no_grad():
            reduced = f if args.raw else net.reduce(f)
            pooled = net.presence.standardise(pool_features(f))
        tgt = torch.from_numpy(np.stack([p[1] for p in pos]))
        return reduced, pooled, tgt, [p[2][0] for p in pos]

    def iou(logits, tgt):
        pred, ref = logits[:, 0] > 0, tgt > 0.5
        inter = (pred & ref).sum((1, 2)).float()
        union = (pred | ref).sum((1, 2)).float()
        return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))

    rows, others = [], {}
    for src in sorted(s for s, f in fold_of.items() if f == args.fold):
        pairs, held = teach_pairs(samples, cfg, src, args.pairs)
        held = [s for s in held if s.image in emb_files]
        if len(pairs) < args.pairs or not held or any(s.image not in emb_files for s in pairs):
            continue
        others[src] = held
        r_t, p_t, y_t, _ = tensors(pairs)
        r_h, p_h, y_h, texts = tensors(held)
        probe = fit_probe(
            r_t,
            y_t,
            p_t,
            pairs[0].structure,
            weight_decay=args.weight_decay,
            radius_scale=args.radius_scale,
            hidden=args.hidden,
        )
        with torch.no_grad():
            net_iou = iou(net.belief(net.reduce(r_h) if args.raw else r_h, embed_texts(texts)), y_h).mean().item()
            probe_iou = iou(probe(r_h), y_h).mean().item()
            net_logits = net.belief(net.reduce(r_h) if args.raw else r_h, embed_texts(texts))
            blend_iou = iou((net_logits + probe(r_h)) / 2, y_h).mean().item()
            fit_iou = iou(probe(r_t), y_t).mean().item()
            own = probe.covers(p_h).float().mean().item()
        rows.append(
            {
                "source": src,
                "structure": pairs[0].structure,
                "n": len(held),
                "net": net_iou,
                "probe": probe_iou,
                "blend": blend_iou,
                "probe_on_taught": fit_iou,
                "covers_own": own,
                "probe_obj": probe,
                "p_h": p_h,
            }
        )
    for r in rows:
        rest = torch.cat([o["p_h"] for o in rows if o is not r])
        r["covers_others"] = r["probe_obj"].covers(rest).float().mean().item()
    print(
        "| source | structure | n | net belief IoU | probe | blend | probe on its 5 pairs | covers own | covers others |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['source']} | {r['structure']} | {r['n']} | {r['net']:.3f} | {r['probe']:.3f} | {r['blend']:.3f} | "
            f"{r['probe_on_taught']:.3f} | {r['covers_own']:.2f} | {r['covers_others']:.2f} |"
        )
    print(
        f"mean over {len(rows)} sources: net {np.mean([r['net'] for r in rows]):.3f}, "
        f"probe {np.mean([r['probe'] for r in rows]):.3f}, blend {np.mean([r['blend'] for r in rows]):.3f}, covers own {np.mean([r['covers_own'] for r in rows]):.2f}, "
        f"others {np.mean([r['covers_others'] for r in rows]):.2f}"
    )


if __name__ == "__main__":
    main()

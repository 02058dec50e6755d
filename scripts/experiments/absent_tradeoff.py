"""Experiment (docs/experiments.md, "saying absent on new sources"): on the leave-source-out folds of a
finished `ibisagent eval lso` run, why does the compact policy answer "no" to so few absent-target
questions, and could another threshold of its presence check fix it?

For each fold it loads the fold's policy and reads, without playing episodes, what the policy's
first step decides from: whether it knows the queried structure (`CompactPolicy.read`), its presence
probability and the peak of its belief map, for the fold's present targets (their referring query)
and for its absent-target questions (`data.queries.absent_targets`, as `eval lso` asks them). The
policy says "no" only when it knows the structure, presence < threshold and the peak < `absent_peak`.
It prints the split by known/unknown structure and, over a grid of the two thresholds, the share of
absent questions answered "no" against the share of present targets called absent.

    IBISAGENT_ENCODER_PRECISION=bf16 python scripts/experiments/absent_tradeoff.py DATA --lso runs/lso

A few minutes on 2 cores with the embedding cache `eval lso` filled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.queries import absent_targets, make_query
    from ibisagent.policies.compact import CompactPolicy, sigmoid
    from ibisagent.policies.text_encoder import embed_texts
    from ibisagent.train import DEFAULT_CACHE_DIR
    from ibisagent.train.embedding_cache import cache_path, load_embedding
    from ibisagent.train.leave_source_out import LSOConfig, plan, source_of

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--lso", type=Path, required=True, help="a finished `eval lso` run folder")
    args = ap.parse_args()
    config = json.loads((args.lso / "fold_0.json").read_text())["config"]
    cfg = LSOConfig(**{**config, "baselines": tuple(config["baselines"])})
    samples = collect_pairs(args.data)
    fold_of, _, targets = plan(samples, cfg)
    rows = []  # (kind "present"/"absent", known, presence, peak)
    for fold in range(cfg.folds):
        weights = args.lso / f"fold_{fold}" / "compact_policy.pt"
        if not weights.exists():
            print(f"fold {fold}: no weights yet, skipped")
            continue
        policy = CompactPolicy(weights)
        held = [s for s in targets if fold_of[source_of(s)] == fold]
        questions = [("present", s) for s in held] + [("absent", s) for s in absent_targets(held, seed=1)]
        for kind, s in questions:
            f = cache_path(DEFAULT_CACHE_DIR, s.image)
            if not f.exists():
                continue
            reading = policy.read(make_query(s, "referring", seed=0).text)
            feats = load_embedding(f)["features"].float()[None]
            with torch.inference_mode():
                logits, presence = policy.net(feats, embed_texts([reading.query]))
            rows.append((kind, reading.known, float(torch.sigmoid(presence[0])), float(sigmoid(logits.max().item()))))
        print(f"fold {fold}: {len(questions)} questions", flush=True)
    kind = np.array([r[0] for r in rows])
    known = np.array([r[1] for r in rows])
    presence = np.array([r[2] for r in rows])
    peak = np.array([r[3] for r in rows])
    absent, present = kind == "absent", kind == "present"
    print(
        f"\nabsent questions: {absent.sum()}, of which about a structure the fold's policy knows: {(absent & known).sum()}"
    )
    print(f"present targets: {present.sum()}, of which the policy knows the structure: {(present & known).sum()}")

    def says_no(threshold, absent_peak):
        return known & (presence < threshold) & (peak < absent_peak)

    print(
        "\n| presence threshold | absent_peak | absent answered no | of them, known structures | present called absent |"
    )
    print("|---|---|---|---|---|")
    for t in (0.3, 0.5, 0.7, 0.9):
        for ap_ in (0.5, 0.9, 1.01):
            no = says_no(t, ap_)
            print(
                f"| {t} | {ap_ if ap_ <= 1 else 'none'} | {no[absent].mean():.1%} | {no[absent & known].mean():.1%} "
                f"| {no[present].mean():.1%} |"
            )
    a, p = presence[absent & known], presence[present & known]
    if len(a) and len(p):  # the chance that an absent question gets a lower presence than a present target
        auc = (a[:, None] < p[None]).mean() + 0.5 * (a[:, None] == p[None]).mean()
        print(f"\npresence check, known structures only: AUC {auc:.3f} (absent vs present)")


if __name__ == "__main__":
    main()

"""The whole `ibisagent train compact` run: split, embed, train, measure, install."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from ibisagent.errors import IbisInputError
from ibisagent.io.images import atomic_write_bytes
from ibisagent.train.tool.pipeline import _bar_run, console, split_and_embed


def saved_setting(weights: Path, key: str) -> dict | None:
    """The training settings `save_net` stored beside the weights ("config": SFT, "rl": GRPO)."""
    import torch

    return torch.load(weights, map_location="cpu", weights_only=True).get(key)


# What a run spends after SFT besides GRPO, kept from SFT under a --budget: the held-out evaluation
# per pair and compact stage (its episodes, absent-target and unknown-query questions, the text-free
# baselines' share), above the 0.46 s that 2 cores took in a measured run (the report's "timings": 3.4 min
# for 2 x 221 pairs), and a fixed part (the PCA and presence fits, saving, GRPO's last step).
EVAL_SECONDS_PER_PAIR = 0.75
FIXED_MINUTES = 1.0


def sft_minutes_within(budget: float, spent: float, sft: float, rl: float, heldout_pairs: int) -> float:
    """SFT minutes, at most `sft`, that let a run of `budget` minutes end in time: `spent` minutes
    went to embedding and loading, `rl` minutes of GRPO follow (0: none), then the held-out
    evaluation of `heldout_pairs` pairs for each compact stage. budget <= 0: `sft` as given.
    Raises IbisInputError where less than a minute would be left for SFT."""
    if budget <= 0:
        return sft
    stages = 2 if rl > 0 else 1
    reserve = rl + stages * heldout_pairs * EVAL_SECONDS_PER_PAIR / 60 + FIXED_MINUTES
    left = budget - spent - reserve
    if left < 1:
        raise IbisInputError(
            "--budget",
            f"{budget:g} min leave {max(left, 0):.1f} min for SFT after {spent:.1f} min of embedding and loading "
            f"and {reserve:.1f} min kept for GRPO and the held-out evaluation; the embeddings are cached now, so "
            "running the command again starts training at once (or raise --budget; 0 = no whole-run budget)",
        )
    return min(sft, left)


def mirrored_examples(train, cache_dir: Path, cfg) -> tuple[list, dict]:
    """(positives, features by file) of the training images mirrored left-right, embedded once
    into the disk cache like the originals (`build_examples(..., mirrored=True)`)."""
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train.compact.sft import build_examples
    from ibisagent.train.embedding_cache import embed_images

    tool = LiteMedSAMTool(weights="original")
    images = sorted({s.image for s in train})
    files = _bar_run(
        "embedding mirrored images (once, cached)",
        len(images),
        lambda adv: embed_images(tool, images, cache_dir, adv, mirrored=True),
    )
    pos, _, feats, _ = _bar_run(
        "loading mirrored targets",
        len(train),
        lambda adv: build_examples(train, files, cfg.query_variants, cfg.seed, adv, 0, mirrored=True),
    )
    return pos, feats


def run_compact_training(
    data,
    out: Path,
    minutes: float,
    cache_dir: Path,
    heldout: int,
    eval_steps: int,
    install: bool,
    seed: int,
    rl_minutes: float = 0.0,
    resume: bool = False,
    rl_split: int = 0,
    compile: bool = False,
    budget: float = 0.0,
    epochs: float = 0.0,
):
    """SFT for `epochs` passes over the training targets (0: no such limit) within `minutes` (fewer where `budget` > 0
    and the whole run would not end within `budget` minutes: `sft_minutes_within`), then (rl_minutes > 0) the GRPO stage; held-out episodes of every
    stage next to text-free baselines; installs the stage with the higher held-out mean IoU
    (named in the report's "installed"; a choice between two on the split that reports them).
    `resume`: a stage whose weights are already in `out` is loaded, not trained again.
    `rl_split`: percent of the training images (`data.splits.validation_split`) that SFT does not
    see and GRPO trains on: there the belief map errs as it will on new images, while on the SFT
    images it has learnt the answers. `compile`: `CompactTrainConfig.compile`. The report's
    "timings" are the minutes each part of the run took."""
    from ibisagent.data.splits import validation_split
    from ibisagent.policies.belief_net import WEIGHTS, load_net
    from ibisagent.policies.compact import policy_settings
    from ibisagent.train.compact.card import model_card
    from ibisagent.train.compact.grpo import CompactRLConfig, train_compact_rl
    from ibisagent.train.compact.sft import (
        CompactTrainConfig,
        build_examples,
        embed_query_texts,
        evaluate_absent,
        evaluate_compact,
        evaluate_unknown_queries,
        paired_stages,
        train_compact,
    )

    t0 = time.perf_counter()
    _, train, held, emb_files = split_and_embed(data, heldout, cache_dir)
    if rl_split and rl_minutes <= 0:
        console.print("no GRPO stage (--rl-minutes 0): SFT trains on every training image, --rl-split is not used")
        rl_split = 0
    train, rl_train = validation_split(train, heldout, rl_split) if rl_split else (train, [])
    if rl_split and not (train and rl_train):  # a dataset too small to split: GRPO on the SFT images
        console.print(f"[yellow]too few training images to keep {rl_split}% from SFT: GRPO trains on the SFT images[/]")
        train, rl_train, rl_split = train + rl_train, [], 0
    cfg = CompactTrainConfig(minutes=minutes, seed=seed, heldout_percent=heldout, compile=compile)
    if epochs > 0:  # a step count, not minutes: a busy or slow machine trains the same policy, only later
        cfg = replace(cfg, epochs=epochs)
    pos, neg, feats, skipped = _bar_run(
        "loading targets",
        len(train),
        lambda adv: build_examples(train, emb_files, cfg.query_variants, seed, adv, cfg.absent_per_image),
    )
    console.print(f"{len(pos)} targets, {len(neg)} absent-target negatives, {skipped} skipped")
    n_mirrored = 0
    if cfg.mirror:
        mpos, mfeats = mirrored_examples(train, cache_dir, cfg)
        pos, feats, n_mirrored = pos + mpos, feats | mfeats, len(mpos)
        console.print(f"+ {n_mirrored} targets on the images mirrored left-right")
    rl_pos, rl_feats = pos, feats
    if rl_train:  # SFT (and its PCA fit) must not see these images: their features go to GRPO only
        rl_pos, _, more, _ = build_examples(rl_train, emb_files, cfg.query_variants, seed, None, 0)
        rl_feats = feats | more
        console.print(f"{len(rl_pos)} targets on {rl_split}% of the training images kept from SFT for GRPO")
        if not rl_pos:
            console.print("[yellow]no usable target in the images kept for GRPO: it trains on the SFT images[/]")
            rl_pos, rl_feats = pos, feats
    text_emb = embed_query_texts(pos + (rl_pos if rl_train else []), neg, log=console.print)
    weights, rl_weights = out / "compact_policy.pt", out / "compact_policy_rl.pt"
    timings = {"embedding_and_loading": minutes_since(t0)}
    if resume and weights.exists():
        console.print(f"reusing the SFT stage {weights}")
    else:
        sft = sft_minutes_within(budget, timings["embedding_and_loading"], minutes, rl_minutes, len(held))
        if sft < minutes:
            console.print(
                f"SFT trains for {sft:.1f} of its {minutes:g} min so that the run ends within --budget {budget:g} min "
                f"({timings['embedding_and_loading']:.1f} min went to embedding and loading)"
            )
        cfg = replace(cfg, minutes=sft)
        t1 = time.perf_counter()
        weights = train_compact(pos, neg, feats, out, cfg, log=console.print, text_emb=text_emb)
        timings["sft"] = minutes_since(t1)
    stages = {"sft": weights}
    rl_cfg = CompactRLConfig(minutes=rl_minutes, seed=seed)
    if rl_minutes > 0 and resume and rl_weights.exists():
        console.print(f"reusing the GRPO stage {rl_weights}")
        stages["sft+rl"] = rl_weights
    elif rl_minutes > 0:
        t1 = time.perf_counter()
        stages["sft+rl"] = train_compact_rl(
            load_net(weights), rl_pos, rl_feats, text_emb, out, rl_cfg, log=console.print
        )
        timings["grpo"] = minutes_since(t1)
    t1 = time.perf_counter()
    from ibisagent.tools.onnx_encoder import encoder_precision
    from ibisagent.train.leave_source_out import source_of

    report = {
        "command": {"epochs": epochs, "rl_minutes": rl_minutes, "heldout": heldout, "seed": seed},
        "sft_steps": saved_setting(weights, "steps"),
        "train_sources": len({source_of(s) for s in train + rl_train}),
        "encoder_precision": encoder_precision(),
        "train_targets": len(pos) - n_mirrored,
        "rl_split": rl_split,
        "rl_targets": len(rl_pos),
        "mirrored_targets": n_mirrored,
        "negatives": len(neg),
        "skipped": skipped,
        "heldout_pairs": len(held),
        # A reused stage was trained with the settings saved in its weights, not today's defaults.
        "config": saved_setting(weights, "config") or cfg.__dict__,
        "resumed": resume,
        "policy_settings": policy_settings(),
        "rl_config": (saved_setting(stages["sft+rl"], "rl") or rl_cfg.__dict__) if "sft+rl" in stages else None,
        "results": {},
    }
    specs = {name: f"compact:{w}" for name, w in stages.items()} | {"centre": "centre", "salient": "salient"}
    for name, spec in specs.items():
        res = _bar_run(
            f"held-out episodes ({name})",
            len(held),
            lambda adv, spec=spec: evaluate_compact(spec, held, emb_files, eval_steps, adv),
        )
        report["results"][name] = res
        cats = ", ".join(f"{k} {v['mean_iou']:.3f} (n={v['n']})" for k, v in res["per_category"].items())
        console.print(f"{name}: mean IoU {res['mean_iou']:.3f} over {res['n']}; {cats}")
        if spec.startswith("compact:"):
            absent = _bar_run(
                f"absent-target questions ({name})",
                len(held),
                lambda adv, spec=spec: evaluate_absent(spec, held, emb_files, eval_steps, adv),
            )
            res["absent"] = absent
            unknown = evaluate_unknown_queries(spec, held, emb_files)
            res["unknown_queries"] = unknown
            console.print(
                f"{name}: stops with 'no' on {absent['stop_no_accuracy']:.1%} of {absent['n']} absent targets; "
                f"marks {unknown['marked']:.1%} of {unknown['n']} out-of-domain queries as unknown (no mask or a "
                f"low-confidence guess)"
            )
    if "sft+rl" in stages:
        # One split of ~200 targets: whether GRPO beat SFT is only as sure as this interval says.
        d = report["rl_vs_sft"] = paired_stages(report["results"]["sft"], report["results"]["sft+rl"])
        console.print(
            f"sft+rl - sft: {d['diff']:+.3f} mean IoU over {d['n']} held-out targets, "
            f"95% bootstrap interval [{d['low']:+.3f}, {d['high']:+.3f}]"
        )
    report["installed"] = max(stages, key=lambda name: report["results"][name]["mean_iou"])
    timings |= {"evaluation": minutes_since(t1), "total": minutes_since(t0)}
    report["budget_minutes"], report["timings"] = budget, timings
    console.print(
        "took "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f} min" for k, v in timings.items())
        + (f" (budget {budget:g} min)" if budget > 0 else "")
    )
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(out / "MODEL_CARD.md", model_card(report).encode())
    console.print(f"wrote {out / 'report.json'} and {out / 'MODEL_CARD.md'}")
    if install:
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stages[report["installed"]], WEIGHTS)
        shutil.copyfile(out / "report.json", WEIGHTS.parent / "compact_report.json")
        shutil.copyfile(out / "MODEL_CARD.md", WEIGHTS.parent / "MODEL_CARD.md")
        console.print(f"installed the {report['installed']} stage as the default policy: {WEIGHTS}")
    return report


def minutes_since(t0: float) -> float:
    return round((time.perf_counter() - t0) / 60, 2)

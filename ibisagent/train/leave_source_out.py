"""Leave-source-out evaluation of the compact policy (`ibisagent eval lso`): how it does on data
from a source it never saw, as a user's own data would be.

Sources are the dataset folders (each `pairs.csv` folder: every `more/<source>` and each folder of
BiomedParse examples). They are dealt into `folds` folds, balanced by pair count; for each fold the
compact policy is trained (SFT, `train.compact.sft.train_compact`, `train_epochs` passes over the fold's
training targets, as `train compact --epochs`: a step count, not minutes, so that a busy or slow machine trains the same policy, only later) on every other
source and played from the query alone on up to `per_source` targets of each source of the fold,
beside the text-free baselines (centre click, salient click, the reference mask's box) on the same
targets, and asked absent-target questions on the fold's images. Each fold's results are written
atomically to OUT/fold_K.json as it ends, so a rerun continues where the last one stopped;
`summarise` pools the folds with bootstrap intervals (`eval.stats`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.io.images import atomic_write_bytes

BASELINES = ("centre", "salient", "box")


@dataclass
class LSOConfig:
    folds: int = 5
    train_epochs: float = 4.0  # SFT passes over each fold's training targets, as `train compact --epochs`
    train_steps: int = 0  # > 0: this many SFT steps per fold instead of `train_epochs`
    minutes: float = 30.0  # ceiling on each fold's SFT minutes
    per_source: int = 10  # evaluation targets per held-out source
    train_per_source: int = 0  # training images per source (0 = all): a shorter cold cache
    max_steps: int = 20
    seed: int = 0
    baselines: tuple[str, ...] = field(default_factory=lambda: BASELINES)
    train: dict = field(default_factory=dict)  # CompactTrainConfig fields to change (`--set`), for model selection


def config_overrides(config_type, pairs: list[str], fixed: tuple[str, ...] = (), option: str = "--set") -> dict:
    """["mix_style=0.5", "dilations=1,2", ...] -> {field: value}, each value parsed as the type of that
    field of the dataclass `config_type`; a field in `fixed`, an unknown field or a bad value is an
    IbisInputError naming the fields that may be set."""
    from dataclasses import fields

    known = {f.name: type(f.default) for f in fields(config_type) if f.name not in fixed}
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise IbisInputError(option, f"expected FIELD=VALUE with FIELD one of {', '.join(known)}; got {pair!r}")
        kind = known[key]
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            elif kind is tuple:
                value = tuple(int(v) for v in text.split(","))
            else:
                value = kind(text)
        except ValueError:
            raise IbisInputError(option, f"{key} expects a {kind.__name__}, got {text!r}") from None
        out[key] = value
    return out


def train_overrides(pairs: list[str]) -> dict:
    """`config_overrides` of the SFT recipe (`CompactTrainConfig`), less what LSOConfig sets itself."""
    from ibisagent.train.compact.sft import CompactTrainConfig

    return config_overrides(
        CompactTrainConfig, pairs, fixed=("minutes", "max_steps", "epochs", "seed", "heldout_percent")
    )


def source_of(sample) -> str:
    """A sample's source: its dataset folder."""
    return sample.origin or sample.image.parent.name


def _rank(seed: int, text: str) -> str:
    return hashlib.sha1(f"{seed}:{text}".encode()).hexdigest()


def assign_folds(samples, k: int) -> dict[str, int]:
    """Source -> fold in [0, k): largest sources first, each to the fold with the fewest pairs so
    far (ties: the lower fold), so folds hold about the same number of pairs."""
    from collections import Counter

    counts = Counter(source_of(s) for s in samples)
    if k < 2 or k > len(counts):
        raise IbisInputError("--folds", f"expected 2 to {len(counts)} folds for {len(counts)} sources, got {k}")
    load, fold_of = [0] * k, {}
    for src, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[src], load[f] = f, load[f] + n
    return fold_of


def in_seeded_order(samples, seed: int) -> list:
    """Samples in a seeded order that does not depend on list order (a hash of seed and id)."""
    return sorted(samples, key=lambda s: _rank(seed, s.id))


def per_source(samples, n: int, seed: int, by_image: bool = False) -> list:
    """At most `n` samples (or, `by_image`, the samples of at most `n` images) of each source, the
    first in `in_seeded_order`; n <= 0: all."""
    if n <= 0:
        return list(samples)
    out, taken = [], {}
    for s in in_seeded_order(samples, seed):
        src = source_of(s)
        seen = taken.setdefault(src, set() if by_image else [])
        if by_image:
            if s.image in seen or len(seen) < n:
                seen.add(s.image)
                out.append(s)
        elif len(seen) < n:
            seen.append(s)
            out.append(s)
    return out


def plan(samples, cfg: LSOConfig) -> tuple[dict[str, int], list, list]:
    """(source -> fold, training pool, evaluation targets): the evaluation targets are the first
    `per_source` of each source in seeded order; the training pool (`train_per_source` images per
    source, 0 = all) is what a fold trains on from the sources outside it."""
    positives = [s for s in samples if not s.negative]
    fold_of = assign_folds(positives, cfg.folds)
    targets = per_source(positives, cfg.per_source, cfg.seed)
    pool = per_source(positives, cfg.train_per_source, cfg.seed, by_image=True)
    return fold_of, pool, targets


def images_needed(samples, cfg: LSOConfig) -> list[Path]:
    """The images a run embeds: those of the training pool and of the evaluation targets."""
    _, pool, targets = plan(samples, cfg)
    return sorted({s.image for s in pool + targets})


def fold_path(out: Path, fold: int) -> Path:
    return out / f"fold_{fold}.json"


def run_fold(fold: int, samples, emb_files: dict, cfg: LSOConfig, out: Path, log=print) -> dict:
    """Train without fold `fold`'s sources, evaluate on them; writes OUT/fold_K.json (atomically)
    and returns it. Weights already in OUT/fold_K/ (an interrupted run) are reused."""
    from ibisagent.train.compact.sft import (
        CompactTrainConfig,
        build_examples,
        evaluate_absent,
        evaluate_compact,
        train_compact,
    )

    fold_of, pool, targets = plan(samples, cfg)
    held_sources = sorted(s for s, f in fold_of.items() if f == fold)
    train = [s for s in pool if fold_of[source_of(s)] != fold]
    held = [s for s in targets if fold_of[source_of(s)] == fold]
    t0 = time.perf_counter()
    weights = out / f"fold_{fold}" / "compact_policy.pt"
    length = {"max_steps": cfg.train_steps} if cfg.train_steps > 0 else {"epochs": cfg.train_epochs}
    train_cfg = CompactTrainConfig(minutes=cfg.minutes, seed=cfg.seed, heldout_percent=0, **length, **cfg.train)
    if weights.exists():
        log(f"fold {fold}: reusing {weights}")
    else:
        pos, neg, feats, skipped = build_examples(
            train, emb_files, train_cfg.query_variants, cfg.seed, None, train_cfg.absent_per_image
        )
        log(f"fold {fold}: training on {len(pos)} targets of {len({source_of(s) for s in train})} sources")
        train_compact(pos, neg, feats, weights.parent, train_cfg, log=log)
    minutes_train = (time.perf_counter() - t0) / 60
    import torch

    steps_done = torch.load(weights, map_location="cpu", weights_only=True).get("steps")
    record = {
        "fold": fold,
        "sources": held_sources,
        "train_pairs": len(train),
        "config": asdict(cfg),
        "minutes_train": round(minutes_train, 2),
        "train_steps_done": steps_done,
        "source_of": {s.id: source_of(s) for s in held},
        "results": {},
    }
    t1 = time.perf_counter()
    for name in ("compact", *cfg.baselines):
        spec = f"compact:{weights}" if name == "compact" else name
        res = evaluate_compact(spec, held, emb_files, cfg.max_steps)
        res["policy"] = name
        record["results"][name] = res
        log(f"fold {fold}: {name} mean IoU {res['mean_iou']:.3f} over {res['n']} targets")
    absent = evaluate_absent(f"compact:{weights}", held, emb_files, cfg.max_steps)
    record["absent"] = absent
    record["minutes_eval"] = round((time.perf_counter() - t1) / 60, 2)
    atomic_write_bytes(fold_path(out, fold), json.dumps(record, indent=1).encode())
    return record


def teach_pairs(samples, cfg: LSOConfig, source: str, n: int) -> tuple[list, list]:
    """(teaching pairs, evaluation targets) of one source: its evaluation targets as in `plan`, and
    the next `n` pairs in seeded order whose images none of those targets use, all of one structure
    (teaching needs `n` pairs of each structure it learns): the structure of the most such pairs
    (ties: the first in seeded order)."""
    from collections import Counter

    _, _, targets = plan(samples, cfg)
    held = [s for s in targets if source_of(s) == source]
    images = {s.image for s in held}
    rest = [s for s in in_seeded_order(samples, cfg.seed) if source_of(s) == source and not s.negative]
    rest = [s for s in rest if s.image not in images]
    if not rest:
        return [], held
    counts = Counter(s.structure for s in rest)
    structure = max(counts, key=lambda k: (counts[k], -next(i for i, s in enumerate(rest) if s.structure == k)))
    return [s for s in rest if s.structure == structure][:n], held


def teachable_sources(samples, cfg: LSOConfig, n: int, folds: set[int]) -> list[str]:
    """The sources of `folds` that `teach_pairs` can teach from `n` pairs and evaluate on, sorted."""
    fold_of, _, _ = plan(samples, cfg)
    out = []
    for src in sorted(s for s, f in fold_of.items() if f in folds):
        pairs, held = teach_pairs(samples, cfg, src, n)
        if len(pairs) >= n and held:
            out.append(src)
    return out


def teach_lift(samples, emb_files: dict, cfg: LSOConfig, out: Path, source: str, teach_cfg=None, log=print) -> dict:
    """Teach the fold's policy (which never saw `source`) from a few pairs of `source`
    (`teach_pairs`, `teach_cfg.min_pairs` of them, `train.teach.teach`) and play it on the source's
    evaluation targets: IoU before (the fold's own results) and after; and on up to 3 targets of each
    other source of the fold, before and after (what teaching costs elsewhere). Writes
    OUT/teach_SOURCE.json atomically."""
    from ibisagent.train.compact.sft import evaluate_compact
    from ibisagent.train.compact.teach import TeachConfig, teach

    teach_cfg = teach_cfg or TeachConfig()
    fold_of, _, targets = plan(samples, cfg)
    if source not in fold_of:
        raise IbisInputError(source, "no such source in the data")
    fold = fold_of[source]
    path = fold_path(out, fold)
    if not path.exists():
        raise IbisInputError(path, f"fold {fold} (holding {source}) has no results yet: run it first")
    record = json.loads(path.read_text())
    pairs, held = teach_pairs(samples, cfg, source, teach_cfg.min_pairs)
    if len(pairs) < teach_cfg.min_pairs or not held:
        raise IbisInputError(source, f"too few pairs to teach from {teach_cfg.min_pairs} and evaluate on the rest")
    t0 = time.perf_counter()
    taught_dir = out / f"teach_{source}"
    card = teach(pairs, emb_files, taught_dir, out / f"fold_{fold}" / "compact_policy.pt", teach_cfg, log)
    minutes_teach = (time.perf_counter() - t0) / 60
    spec = f"compact:{taught_dir / 'compact_policy.pt'}"
    before = record["results"]["compact"]["per_item"]
    after = evaluate_compact(spec, held, emb_files, cfg.max_steps)["per_item"]
    others = per_source([s for s in targets if fold_of[source_of(s)] == fold and source_of(s) != source], 3, cfg.seed)
    elsewhere = evaluate_compact(spec, others, emb_files, cfg.max_steps)["per_item"]
    ids = sorted(after.keys() & before.keys())
    structure_of = {t.id: t.structure for t in held}
    other_ids = sorted(elsewhere.keys() & before.keys())
    result = {
        "source": source,
        "fold": fold,
        "teach_pairs": [s.id for s in pairs],
        "teach_minutes": round(minutes_teach, 2),
        "teach_steps": card["steps"],
        "teach_config": asdict(teach_cfg),
        "n": len(ids),
        "before": float(np.mean([before[i] for i in ids])) if ids else float("nan"),
        "after": float(np.mean([after[i] for i in ids])) if ids else float("nan"),
        "structure": pairs[0].structure,
        "per_item": {
            i: {"before": before[i], "after": after[i], "taught_structure": structure_of[i] == pairs[0].structure}
            for i in ids
        },
        "other_sources": {
            "n": len(other_ids),
            "before": float(np.mean([before[i] for i in other_ids])) if other_ids else float("nan"),
            "after": float(np.mean([elsewhere[i] for i in other_ids])) if other_ids else float("nan"),
        },
    }
    atomic_write_bytes(out / f"teach_{source}.json", json.dumps(result, indent=1).encode())
    log(
        f"teach {source}: IoU on its other pairs {result['before']:.3f} -> {result['after']:.3f} (n={result['n']}); "
        f"other sources of the fold {result['other_sources']['before']:.3f} -> {result['other_sources']['after']:.3f}"
    )
    return result


def run_lso(samples, emb_files: dict, cfg: LSOConfig, out: Path, folds=None, log=print) -> dict:
    """Every fold (or those in `folds`) not yet written to OUT, then `summarise`. A fold file written
    with other settings is an error (use another OUT or remove it), not silently mixed in."""
    out.mkdir(parents=True, exist_ok=True)
    for fold in folds if folds is not None else range(cfg.folds):
        if not 0 <= fold < cfg.folds:
            raise IbisInputError("--fold", f"expected a fold in 0..{cfg.folds - 1}, got {fold}")
        path = fold_path(out, fold)
        if path.exists():
            done = json.loads(path.read_text())
            now = json.loads(json.dumps(asdict(cfg)))
            if done.get("config") != now:
                was = done.get("config") or {}
                differ = ", ".join(f"{k}: {was.get(k)} there, {now[k]} now" for k in now if was.get(k) != now[k])
                raise IbisInputError(path, f"written with other settings ({differ}); use another --out or remove it")
            log(f"fold {fold}: done already ({path})")
            continue
        run_fold(fold, samples, emb_files, cfg, out, log)
    return summarise(out, samples)


def named_in_training(samples, config: dict) -> dict[str, bool]:
    """Evaluation target id -> whether its structure (case-insensitive) is the structure of any
    training pair of its fold: on the others the query names something no training example showed."""
    cfg = LSOConfig(**{**config, "baselines": tuple(config.get("baselines", BASELINES))})
    fold_of, pool, targets = plan(samples, cfg)
    names = [{s.structure.lower() for s in pool if fold_of[source_of(s)] != f} for f in range(cfg.folds)]
    return {s.id: s.structure.lower() in names[fold_of[source_of(s)]] for s in targets}


def summarise(out: Path, samples=None) -> dict:
    """Pool OUT/fold_*.json: per policy the mean IoU over all targets with a 95% bootstrap interval,
    each fold's mean, the compact policy's paired difference to each baseline (pooled and per fold),
    per-source means, absent-target "no" share and present targets called absent. With `samples`
    (the run's data), the targets are also split by whether their structure is named by any
    training source of their fold (`named_in_training`). Writes OUT/summary.json and OUT/summary.md."""
    from ibisagent.eval.stats import bootstrap_ci, paired_difference

    files = [p for p in out.glob("fold_*.json") if re.fullmatch(r"fold_\d+\.json", p.name)]
    records = sorted((json.loads(p.read_text()) for p in files), key=lambda r: r["fold"])
    if not records:
        raise IbisInputError(out, "no fold results yet (run: ibisagent eval lso DATA --out OUT)")
    names = list(records[0]["results"])
    pooled = {n: {} for n in names}
    source_of = {}
    for r in records:
        source_of |= r["source_of"]
        for n in names:
            pooled[n] |= r["results"][n]["per_item"]
    ids = sorted(set.intersection(*(set(pooled[n]) for n in names)))
    summary = {"folds_done": [r["fold"] for r in records], "n_folds": records[0]["config"]["folds"]}
    summary["config"] = records[0]["config"]
    summary["n_targets"] = len(ids)
    summary["policies"] = {}
    for n in names:
        values = [pooled[n][i] for i in ids]
        lo, hi = bootstrap_ci(values)
        summary["policies"][n] = {
            "mean_iou": float(np.mean(values)) if values else float("nan"),
            "low": lo,
            "high": hi,
            "per_fold": {r["fold"]: r["results"][n]["mean_iou"] for r in records},
        }
    summary["compact_minus"] = {
        b: paired_difference([pooled[b][i] for i in ids], [pooled["compact"][i] for i in ids])
        for b in names
        if b != "compact"
    }
    if "centre" in names:
        summary["compact_at_least_centre_on_every_fold"] = all(
            r["results"]["compact"]["mean_iou"] >= r["results"]["centre"]["mean_iou"] for r in records
        )
    by_source: dict[str, dict[str, list]] = {}
    for i in ids:
        for n in names:
            by_source.setdefault(source_of[i], {}).setdefault(n, []).append(pooled[n][i])
    summary["per_source"] = {
        s: {"n": len(v["compact"])} | {n: float(np.mean(v[n])) for n in names} for s, v in sorted(by_source.items())
    }
    if samples is not None:
        named = named_in_training(samples, records[0]["config"])
        summary["by_naming"] = {}
        for key, want in (("named", True), ("unnamed", False)):
            part = [i for i in ids if named.get(i) is want]
            summary["by_naming"][key] = {"n": len(part)} | {
                n: float(np.mean([pooled[n][i] for i in part])) if part else float("nan") for n in names
            }
    compact = [r["results"]["compact"] for r in records]
    weights = [c["n"] for c in compact]
    summary["called_absent"] = float(np.average([c["called_absent"] for c in compact], weights=weights))
    summary["no_mask"] = float(np.average([c["no_mask"] for c in compact], weights=weights))
    absent = [r["absent"] for r in records]
    summary["absent_said_no"] = float(
        np.average([a["stop_no_accuracy"] for a in absent], weights=[max(a["n"], 1) for a in absent])
    )
    summary["absent_n"] = int(sum(a["n"] for a in absent))
    summary["minutes"] = {
        "train": round(sum(r["minutes_train"] for r in records), 1),
        "eval": round(sum(r["minutes_eval"] for r in records), 1),
    }
    taught = sorted((json.loads(p.read_text()) for p in out.glob("teach_*.json")), key=lambda t: t["source"])
    if taught:
        summary["teach"] = {
            "sources": {
                t["source"]: {k: t[k] for k in ("fold", "n", "before", "after", "teach_minutes")} for t in taught
            },
            "before": float(np.mean([t["before"] for t in taught])),
            "after": float(np.mean([t["after"] for t in taught])),
            "other_sources_before": float(np.mean([t["other_sources"]["before"] for t in taught])),
            "other_sources_after": float(np.mean([t["other_sources"]["after"] for t in taught])),
        }
        # every target of the taught sources, and those of the taught structure, paired before/after
        items = [v for t in taught for v in t["per_item"].values()]
        same = [v for v in items if v.get("taught_structure")]
        for key, group in (("all_targets", items), ("taught_structure", same)):
            if not group:
                continue
            d = paired_difference([v["before"] for v in group], [v["after"] for v in group])
            summary["teach"][key] = {**d, "after_ci": list(bootstrap_ci([v["after"] for v in group]))}
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    atomic_write_bytes(out / "summary.md", summary_markdown(summary).encode())
    return summary


def summary_markdown(summary: dict) -> str:
    """The summary as Markdown tables (policies; per source)."""
    names = list(summary["policies"])
    folds = summary["folds_done"]
    lines = [
        f"Leave-source-out, folds {', '.join(map(str, folds))} of {summary['n_folds']}, "
        f"{summary['n_targets']} targets from the query alone (95% bootstrap intervals).",
        "",
        "| policy | mean IoU | 95% interval | " + " | ".join(f"fold {f}" for f in folds) + " |",
        "|---|---|---|" + "---|" * len(folds),
    ]
    for n in names:
        p = summary["policies"][n]
        per = " | ".join(f"{p['per_fold'][f] if f in p['per_fold'] else p['per_fold'][str(f)]:.3f}" for f in folds)
        lines.append(f"| {n} | {p['mean_iou']:.3f} | [{p['low']:.3f}, {p['high']:.3f}] | {per} |")
    lines.append("")
    for b, d in summary["compact_minus"].items():
        lines.append(f"- compact - {b}: {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] over {d['n']} targets")
    if "compact_at_least_centre_on_every_fold" in summary:
        lines.append(
            f"- compact at least the centre click on every fold: {summary['compact_at_least_centre_on_every_fold']}"
        )
    lines.append(
        f"- present targets called absent: {summary['called_absent']:.1%}; episodes without a mask: "
        f"{summary['no_mask']:.1%}; absent-target questions answered no: {summary['absent_said_no']:.1%} "
        f"of {summary['absent_n']}"
    )
    if "by_naming" in summary:
        for key, words in (("named", "named by a training source"), ("unnamed", "named by no training source")):
            v = summary["by_naming"][key]
            means = ", ".join(f"{n} {v[n]:.3f}" for n in names)
            lines.append(f"- {v['n']} targets whose structure is {words} of their fold: {means}")
    lines.append(f"- minutes: training {summary['minutes']['train']}, evaluation {summary['minutes']['eval']}")
    if "teach" in summary:
        t = summary["teach"]
        lines += ["", "| taught source (fold) | n | IoU before | after | minutes |", "|---|---|---|---|---|"]
        for src, v in t["sources"].items():
            lines.append(
                f"| {src} ({v['fold']}) | {v['n']} | {v['before']:.3f} | {v['after']:.3f} | {v['teach_minutes']} |"
            )
        lines.append(
            f"| mean | | {t['before']:.3f} | {t['after']:.3f} | |\n\nOther sources of the same folds (up to 3 targets "
            f"each), before and after teaching: {t['other_sources_before']:.3f} -> {t['other_sources_after']:.3f}."
        )
        for key, words in (
            ("all_targets", "all targets of the taught sources"),
            ("taught_structure", "those of the taught structure"),
        ):
            if key in t:
                d = t[key]
                lines.append(
                    f"- {words}: {d['mean_a']:.3f} -> {d['mean_b']:.3f} [{d['after_ci'][0]:.3f}, {d['after_ci'][1]:.3f}] "
                    f"(n={d['n']}); after - before {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                )
    lines += ["", "| source | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for s, v in summary["per_source"].items():
        lines.append(f"| {s} | {v['n']} | " + " | ".join(f"{v[n]:.3f}" for n in names) + " |")
    return "\n".join(lines) + "\n"

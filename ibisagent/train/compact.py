"""Training the compact click policy (`ibisagent train compact`), supervised stage.

The click simulator's actions are a function of the reference mask and the current mask, so
cloning its behaviour reduces to learning, from the query and the image embedding, where the
reference mask is: the belief map the policy clicks against (see policies/compact.py). Targets
are the reference masks in the tool's frame, average-pooled to 64 x 64 (soft labels); absent
targets (`data.queries.absent_targets`) teach the presence head to stop with "no". Queries are
drawn from the seeded referring and reasoning templates of `data/queries.py` so the policy
follows phrasing, not just names. Image embeddings come from the tool-training disk cache.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError


@dataclass
class CompactTrainConfig:
    minutes: float = 12.0
    max_steps: int = 1_000_000  # also stop after this many steps (tests: reproducible length)
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    p_negative: float = 0.15
    query_variants: int = 3
    hidden: int = 64
    seed: int = 0
    heldout_percent: int = 15


def pooled_target(target256: np.ndarray) -> np.ndarray:
    """256 x 256 bool (tool frame) -> 64 x 64 float in [0, 1] (fraction of each 4 x 4 cell)."""
    return target256.reshape(64, 4, 64, 4).mean((1, 3)).astype(np.float32)


def query_texts(sample, n: int) -> list[str]:
    from ibisagent.data.queries import make_query

    texts = [f"Segment the {sample.structure}."]
    for k in range(n):
        for kind in ("referring", "reasoning"):
            texts.append(make_query(sample, kind, seed=k).text)
    return list(dict.fromkeys(texts))


def build_examples(samples, emb_files, n_variants: int, seed: int, progress=None):
    """(positives, negatives, features by file, skipped): positives are (feature key, 64 x 64
    target, texts, 256 x 256 bool target); negatives (feature key, texts) for absent targets."""
    from ibisagent.data.queries import absent_targets
    from ibisagent.train.embedding_cache import load_embedding
    from ibisagent.train.tool import target_in_frame

    feats: dict[Path, object] = {}
    positives, skipped = [], 0
    for s in samples:
        ef = emb_files.get(s.image)
        if not isinstance(ef, Path):
            skipped += 1
            continue
        if ef not in feats:
            feats[ef] = load_embedding(ef)
        e = feats[ef]
        try:
            _, mask = s.load()
        except IbisInputError:
            skipped += 1
            continue
        t256 = target_in_frame(mask, tuple(e["input_size"]))
        t = pooled_target(t256)
        if t.max() <= 0:
            skipped += 1
            continue
        positives.append((ef, t, query_texts(s, n_variants), t256))
        if progress:
            progress()
    negatives = []
    for s in absent_targets(samples, seed=seed, per_image=2):
        ef = emb_files.get(s.image)
        if isinstance(ef, Path) and ef in feats:
            negatives.append((ef, query_texts(s, 1)))
    return positives, negatives, {k: v["features"] for k, v in feats.items()}, skipped


def embed_query_texts(positives, negatives, log=print) -> dict:
    """Every query text of the examples -> its 384-d MiniLM embedding (torch)."""
    from ibisagent.policies.text_encoder import embed_texts

    all_texts = sorted({t for p in positives for t in p[2]} | {t for _, ts in negatives for t in ts})
    log(f"embedding {len(all_texts)} query texts with MiniLM")
    return dict(zip(all_texts, embed_texts(all_texts)))


def train_compact(
    positives, negatives, feats, out_dir: Path, cfg: CompactTrainConfig, log=print, text_emb: dict | None = None
) -> Path:
    import torch
    import torch.nn.functional as F

    from ibisagent.policies.compact import build_net, save_net

    if not positives:
        raise IbisInputError(out_dir, "no usable training targets")
    out_dir.mkdir(parents=True, exist_ok=True)
    text_emb = text_emb if text_emb is not None else embed_query_texts(positives, negatives, log)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = build_net(hidden=cfg.hidden)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    budget = cfg.minutes * 60
    t0 = time.perf_counter()
    step, ema = 0, None
    log_fh = (out_dir / "train_log.jsonl").open("w")
    while time.perf_counter() - t0 < budget and step < cfg.max_steps:
        frac = max((time.perf_counter() - t0) / budget, step / cfg.max_steps)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (step + 1) / 20) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))
        n_neg = sum(rng.random() < cfg.p_negative for _ in range(cfg.batch_size)) if negatives else 0
        pos = [positives[rng.randrange(len(positives))] for _ in range(cfg.batch_size - n_neg)]
        neg = [negatives[rng.randrange(len(negatives))] for _ in range(n_neg)]
        f = torch.stack([feats[p[0]] for p in pos] + [feats[n[0]] for n in neg]).float()
        # Random horizontal flips would swap "left" and "right": no flips.
        tgt = torch.from_numpy(np.stack([p[1] for p in pos] + [np.zeros((64, 64), np.float32)] * n_neg))[:, None]
        txt = torch.stack([text_emb[rng.choice(p[2])] for p in pos] + [text_emb[rng.choice(n[1])] for n in neg])
        present = torch.tensor([1.0] * len(pos) + [0.0] * n_neg)
        logits, pres = net(f, txt)
        bce = F.binary_cross_entropy_with_logits(logits, tgt, reduction="none").mean((1, 2, 3))
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * tgt).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + tgt.sum((1, 2, 3)) + 1)
        loss = (
            (bce * 10).mean()
            + (dice * present).sum() / present.sum().clamp(min=1)
            + F.binary_cross_entropy_with_logits(pres, present)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        value = loss.item()
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        log_fh.write(
            json.dumps({"step": step, "loss": round(value, 4), "dice": round(dice[: len(pos)].mean().item(), 4)}) + "\n"
        )
        if step % 25 == 0:
            log_fh.flush()
            log(
                f"step {step} loss {ema:.3f} dice-loss {dice[: len(pos)].mean().item():.3f} {(time.perf_counter() - t0) / 60:.1f}/{cfg.minutes:.0f} min"
            )
    log_fh.close()
    return save_net(net, out_dir / "compact_policy.pt", steps=step, config=asdict(cfg))


def heldout_episodes(policy_spec: str, samples, emb_files, max_steps: int = 10, progress=None):
    """Yield (sample, reference mask or None, episode or the IbisInputError of an unreadable
    sample) for each sample: one episode from its referring query alone (seed 0), on the
    shipped tool with the image embedding taken from the disk cache."""
    from ibisagent.data.queries import make_query
    from ibisagent.env.env import IbisEnv
    from ibisagent.env.runner import run_episode
    from ibisagent.policies import make_policy
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train.tool_eval import prime_cache

    tool = LiteMedSAMTool(cache_entries=8)
    env = IbisEnv(tool, max_steps=max_steps)
    policy = make_policy(policy_spec)
    for s in samples:
        try:
            image, gt = s.load()
        except IbisInputError as exc:
            yield s, None, exc
            continue
        ef = emb_files.get(s.image)
        if isinstance(ef, Path):
            prime_cache(tool, image, ef)
        yield s, gt, run_episode(env, policy, image, make_query(s, "referring", seed=0).text, gt)
        if progress:
            progress()


def evaluate_compact(policy_spec: str, samples, emb_files, max_steps: int = 10, progress=None) -> dict:
    """End-to-end held-out episodes from the query alone: final IoU overall, per category
    (organ, lesion, ...) and per modality."""
    from collections import defaultdict

    from ibisagent.data.structures import lookup
    from ibisagent.eval.metrics import iou

    rows = []
    for s, gt, ep in heldout_episodes(policy_spec, samples, emb_files, max_steps, progress):
        if isinstance(ep, IbisInputError):
            rows.append({"id": s.id, "error": str(ep)})
            continue
        info = lookup(s.structure)
        rows.append(
            {
                "id": s.id,
                "structure": s.structure,
                "modality": s.modality,
                "category": info.category if info else "other",
                "iou": iou(ep.final_mask, gt),
                "steps": len(ep.steps),
                "stop": ep.stop_reason,
            }
        )
    ok = [r for r in rows if "iou" in r]
    by_cat, by_mod = defaultdict(list), defaultdict(list)
    for r in ok:
        by_cat[r["category"]].append(r["iou"])
        by_mod[r["modality"]].append(r["iou"])
    return {
        "policy": policy_spec,
        "n": len(ok),
        "errors": len(rows) - len(ok),
        "mean_iou": float(np.mean([r["iou"] for r in ok])) if ok else float("nan"),
        "per_category": {k: {"n": len(v), "mean_iou": float(np.mean(v))} for k, v in sorted(by_cat.items())},
        "per_modality": {k: {"n": len(v), "mean_iou": float(np.mean(v))} for k, v in sorted(by_mod.items())},
        "mean_steps": float(np.mean([r["steps"] for r in ok])) if ok else float("nan"),
    }


def evaluate_absent(policy_spec: str, samples, emb_files, max_steps: int = 10, progress=None) -> dict:
    """Absent-target questions on held-out images (`data.queries.absent_targets`: a structure
    that cannot appear in the image): the share of episodes that stop with a "no" answer, and
    the share that stop at once (no click)."""
    from ibisagent.data.queries import absent_targets
    from ibisagent.eval.metrics import yes_no

    said_no = at_once = n = 0
    for _, _, ep in heldout_episodes(policy_spec, absent_targets(samples, seed=1), emb_files, max_steps, progress):
        if isinstance(ep, IbisInputError):
            continue
        n += 1
        said_no += ep.stop_reason == "stop" and yes_no(ep.answer) == "no"
        at_once += not ep.clicks
    return {"policy": policy_spec, "n": n, "stop_no_accuracy": said_no / max(n, 1), "no_click": at_once / max(n, 1)}

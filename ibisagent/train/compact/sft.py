"""Training the compact click policy (`ibisagent train compact`), supervised stage.

The click simulator's actions are a function of the reference mask and the current mask, so
cloning its behaviour reduces to learning, from the query and the image embedding, where the
reference mask is: the belief map the policy clicks against (see policies/compact.py). Targets
are the reference masks in the tool's frame, average-pooled to 64 x 64 (soft labels); absent
targets (`data.queries.absent_targets`) get an empty belief. Queries are drawn from the seeded
referring and reasoning templates of `data/queries.py` so the policy follows phrasing, not just
names. Image embeddings come from the tool-training disk cache.

`fit_presence` then fits the presence head alone, class-balanced, on every (image, query) pair:
present targets against absent targets and out-of-domain queries; it also stores the training
queries' embeddings, which the policy uses to say "not found" for queries it never learned.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError


@dataclass
class CompactTrainConfig:
    minutes: float = 12.0
    max_steps: int = 1_000_000  # also stop after this many steps (tests: reproducible length)
    # Passes over the training targets; > 0 sets max_steps to ceil(epochs x targets / batch_size), so that
    # a recipe means the same on a small or a large dataset (chosen on leave-source-out folds).
    epochs: float = 0.0
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    p_negative: float = 0.15
    query_variants: int = 3
    hidden: int = 64
    reduce: int = 64  # principal components of the 256-channel embedding the belief net reads
    dilations: tuple[int, ...] = (1, 1, 1, 1)  # one FiLM block per entry, 3 x 3 conv with this dilation
    coarse: int = 0  # FiLM blocks at 16 x 16 before the last block (BeliefNetConfig's `coarse`)
    seed: int = 0
    heldout_percent: int = 15
    absent_per_image: int = 6  # absent-target negatives per training image
    ood_per_image: int = 2  # out-of-domain queries per training image (presence head)
    presence_epochs: int = 30
    shift_cells: int = 4  # augmentation: random translation of map and target, up to this many cells
    channel_dropout: float = 0.1  # augmentation: drop whole principal-component channels
    feature_noise: float = 0.0  # augmentation: Gaussian noise of this std on the whitened components
    mix_style: float = 0.0  # augmentation: share of batches whose maps swap channel statistics (`mix_style`)
    dropout: float = 0.0  # spatial dropout of each FiLM block's output (training only)
    mirror: bool = False  # also train on the training images mirrored left-right ("left"/"right" swapped)
    precision: str = "auto"  # "fp32", "bf16" (autocast) or "auto": bf16 where the CPU computes it natively
    ema: float = 0.0  # keep an exponential moving average of the weights with this decay and save it (0 = off)
    # torch.compile the belief net (about 1.4x the steps per minute; eager where no compiler is found).
    # Off by default: the shipped weights were trained without it (README, "Compact policy").
    compile: bool = False


def use_bf16(precision: str) -> bool:
    """Whether the belief net trains under bfloat16 autocast: "bf16", "fp32", or "auto" = where the
    CPU computes bfloat16 natively (AMX or AVX512-BF16; there a training step takes about a third
    of its fp32 time, `bench/compact_train_step.py`; elsewhere bf16 is emulated and slower)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise IbisInputError("precision", f"expected auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    from ibisagent.hardware import native_bf16

    return native_bf16()


def lr_scale(step: int, frac: float) -> float:
    """The supervised stages' learning-rate factor: linear warm-up over 20 steps, then a cosine from 1
    to 0.05 over the budget; `frac` in [0, 1] is the share of the budget spent."""
    return min(1.0, (step + 1) / 20) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))


def pooled_target(target256: np.ndarray) -> np.ndarray:
    """256 x 256 bool (tool frame) -> 64 x 64 float in [0, 1] (fraction of each 4 x 4 cell)."""
    return target256.reshape(64, 4, 64, 4).mean((1, 3)).astype(np.float32)


def belief_loss(logits, target, present):
    """The supervised loss of the belief map: 10 x BCE + Dice (Dice on present targets only).
    logits, target: B x 1 x 64 x 64 (target in [0, 1]); present: B floats (1 = target present).
    -> (scalar loss, per-item Dice loss B)."""
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((1, 2, 3))
    p = logits.sigmoid()
    dice = 1 - (2 * (p * target).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return (bce * 10).mean() + (dice * present).sum() / present.sum().clamp(min=1), dice


def belief_step(net, opt, reduced, text, target, present, bf16: bool, forward=None):
    """One supervised step of the belief net: the forward pass under bfloat16 autocast when
    `bf16`, the loss (`belief_loss`) in float32, gradients clipped to norm 1. reduced B x C x 64 x 64,
    text B x 384, target B x 1 x 64 x 64, present B -> (loss, per-item Dice loss B).
    `forward`: the belief function to call (`compiled_belief`); None = `net.belief`."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = (forward or net.belief)(reduced, text).float()
    loss, dice = belief_loss(logits, target, present)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss, dice


def query_texts(sample, n: int) -> list[str]:
    from ibisagent.data.queries import make_query

    texts = [f"Segment the {sample.structure}."]
    for k in range(n):
        for kind in ("referring", "reasoning"):
            texts.append(make_query(sample, kind, seed=k).text)
    return list(dict.fromkeys(texts))


def build_examples(
    samples, emb_files, n_variants: int, seed: int, progress=None, absent_per_image: int = 6, mirrored: bool = False
):
    """(positives, negatives, features by file, skipped): positives are (feature key, 64 x 64
    target, texts, 256 x 256 bool target); negatives (feature key, texts) for absent targets.
    `mirrored`: `emb_files` are the embeddings of the images mirrored left-right
    (`embed_images(..., mirrored=True)`); the masks are mirrored and "left"/"right" swapped in
    the query texts to match."""
    from ibisagent.data.queries import absent_targets, mirror_text
    from ibisagent.train.embedding_cache import load_embedding
    from ibisagent.train.tool.recipe import target_in_frame

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
        t256 = target_in_frame(mask[:, ::-1] if mirrored else mask, tuple(e["input_size"]))
        t = pooled_target(t256)
        if t.max() <= 0:
            skipped += 1
            continue
        texts = query_texts(s, n_variants)
        positives.append((ef, t, list(map(mirror_text, texts)) if mirrored else texts, t256))
        if progress:
            progress()
    negatives = []
    for s in absent_targets(samples, seed=seed, per_image=absent_per_image):
        ef = emb_files.get(s.image)
        if isinstance(ef, Path) and ef in feats:
            negatives.append((ef, query_texts(s, 1)))
    return positives, negatives, {k: v["features"] for k, v in feats.items()}, skipped


def embed_query_texts(positives, negatives, log=print, extra_texts=(), known: dict | None = None) -> dict:
    """Every query text of the examples (and `extra_texts`) -> its 384-d MiniLM embedding
    (torch); texts already in `known` are reused, not embedded again."""
    from ibisagent.policies.text_encoder import embed_texts

    known = dict(known or {})
    all_texts = {t for p in positives for t in p[2]} | {t for _, ts in negatives for t in ts} | set(extra_texts)
    todo = sorted(all_texts - set(known))
    if todo:
        log(f"embedding {len(todo)} query texts with MiniLM")
        known.update(zip(todo, embed_texts(todo)))
    return known


def compiled_belief(net, log=print):
    """`net.belief` compiled by torch.compile (Inductor fuses the FiLM blocks' norm, modulation
    and activation: 1.65x per step in `bench/compact_train_step.py`, 1.4x the steps of a 36-min run),
    or None (train eager) where no C++ compiler is on the PATH. Compilation happens on the
    first call and takes about half a minute."""
    import shutil

    import torch

    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        log("no C++ compiler found: training the belief net without torch.compile")
        return None
    return torch.compile(net.belief, dynamic=False)


def train_compact(
    positives, negatives, feats, out_dir: Path, cfg: CompactTrainConfig, log=print, text_emb: dict | None = None
) -> Path:
    import torch

    from ibisagent.policies.belief_net import BeliefNet, BeliefNetConfig, save_net
    from ibisagent.train.memory import reuse_freed_memory

    if not positives:
        raise IbisInputError(out_dir, "no usable training targets")
    if cfg.epochs > 0:
        cfg = replace(cfg, max_steps=max(1, math.ceil(cfg.epochs * len(positives) / cfg.batch_size)))
        log(f"{cfg.epochs:g} epochs of {len(positives)} targets: {cfg.max_steps} steps of {cfg.batch_size}")
    out_dir.mkdir(parents=True, exist_ok=True)
    reuse_freed_memory()
    ood = ood_queries_per_image(positives, cfg.ood_per_image, cfg.seed)
    ood_texts = sorted({t for texts in ood.values() for t in texts})
    text_emb = embed_query_texts(positives, negatives, log, extra_texts=ood_texts, known=text_emb)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = BeliefNet(
        BeliefNetConfig(
            hidden=cfg.hidden, reduce=cfg.reduce, dilations=cfg.dilations, dropout=cfg.dropout, coarse=cfg.coarse
        )
    )
    explained = fit_reduction(net, feats, cfg.seed)
    log(f"embedding reduced to {cfg.reduce} principal components ({explained:.1%} of the variance)")
    keys = list(feats)
    row = {k: i for i, k in enumerate(keys)}
    with torch.no_grad():
        reduced = torch.stack([net.reduce(feats[k].float()[None])[0].half() for k in keys])
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    averaged = (
        torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema
        else None
    )
    bf16 = use_bf16(cfg.precision)
    forward = compiled_belief(net, log) if cfg.compile else None
    log(f"training in {'bfloat16 autocast' if bf16 else 'float32'}{', compiled' if forward else ''}")
    budget = cfg.minutes * 60
    t0 = time.perf_counter()
    step, ema = 0, None
    log_fh = (out_dir / "train_log.jsonl").open("w")
    while time.perf_counter() - t0 < budget and step < cfg.max_steps:
        frac = max((time.perf_counter() - t0) / budget, step / cfg.max_steps)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_scale(step, frac)
        n_neg = sum(rng.random() < cfg.p_negative for _ in range(cfg.batch_size)) if negatives else 0
        pos = [positives[rng.randrange(len(positives))] for _ in range(cfg.batch_size - n_neg)]
        neg = [negatives[rng.randrange(len(negatives))] for _ in range(n_neg)]
        f = reduced[torch.tensor([row[p[0]] for p in pos] + [row[n[0]] for n in neg])].float()
        tgt = torch.from_numpy(np.stack([p[1] for p in pos] + [np.zeros((64, 64), np.float32)] * n_neg))[:, None]
        f, tgt = augment(f, tgt, cfg.shift_cells, cfg.channel_dropout, rng, cfg.feature_noise)
        if cfg.mix_style and rng.random() < cfg.mix_style:
            f = mix_style(f, rng)
        txt = torch.stack([text_emb[rng.choice(p[2])] for p in pos] + [text_emb[rng.choice(n[1])] for n in neg])
        present = torch.tensor([1.0] * len(pos) + [0.0] * n_neg)
        # The presence head is fitted on its own afterwards (fit_presence), class-balanced.
        try:
            loss, dice = belief_step(net, opt, f, txt, tgt, present, bf16, forward)
        except Exception as err:  # noqa: BLE001 - any compiler failure: train on without it
            if step or forward is None:
                raise
            log(f"torch.compile failed ({type(err).__name__}: {str(err)[:200]}); training without it")
            forward = None
            loss, dice = belief_step(net, opt, f, txt, tgt, present, bf16, forward)
        if averaged is not None:
            averaged.update_parameters(net)
        step += 1
        value = loss.item()
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        log_fh.write(
            json.dumps({"step": step, "loss": round(value, 4), "dice": round(dice[: len(pos)].mean().item(), 4)}) + "\n"
        )
        if step % 25 == 0:
            log_fh.flush()
            of_steps = f"/{cfg.max_steps}" if cfg.max_steps < 1_000_000 else ""  # a step count was set
            log(
                f"step {step}{of_steps} loss {ema:.3f} dice-loss {dice[: len(pos)].mean().item():.3f} "
                f"{(time.perf_counter() - t0) / 60:.1f} min (at most {cfg.minutes:g})"
            )
    log_fh.close()
    if averaged is not None:
        net.load_state_dict(averaged.module.state_dict())
    presence = fit_presence(net, positives, negatives, ood, feats, text_emb, cfg, log)
    log(
        f"presence head: keeps {presence['train_present_kept']:.1%} of present targets, says no to "
        f"{presence['train_absent_said_no']:.1%} of absent and out-of-domain queries (training pairs)"
    )
    return save_net(net, out_dir / "compact_policy.pt", steps=step, config=asdict(cfg), presence=presence)


def augment(reduced, target, shift: int, channel_dropout: float, rng: random.Random, noise: float = 0.0):
    """Regularise the belief net (it overfits 1,300 targets): translate each map and its target
    together by up to `shift` cells (zeros, the whitened mean, fill the gap) and drop whole
    channels, then add Gaussian noise of std `noise` (the components are whitened: unit
    variance). reduced B x C x 64 x 64, target B x 1 x 64 x 64 -> the same shapes. No flips:
    they would swap "left" and "right"."""
    import torch
    import torch.nn.functional as F

    if shift > 0:
        both = F.pad(torch.cat([reduced, target], 1), (shift,) * 4)
        n = reduced.shape[-1]
        crops = []
        for item in both:
            dy, dx = rng.randint(0, 2 * shift), rng.randint(0, 2 * shift)
            crops.append(item[:, dy : dy + n, dx : dx + n])
        both = torch.stack(crops)
        reduced, target = both[:, :-1], both[:, -1:]
    if channel_dropout > 0:
        reduced = F.dropout2d(reduced, channel_dropout, training=True)
    if noise > 0:
        # torch's global generator: seeded by train_compact (torch.manual_seed(cfg.seed))
        reduced = reduced + noise * torch.randn_like(reduced)
    return reduced, target


def mix_style(reduced, rng: random.Random, alpha: float = 0.1):
    """MixStyle (Zhou et al., ICLR 2021): each map's per-channel mean and std over space, its
    "style" (scanner, contrast, stain), is mixed with another map's of the batch, its content kept,
    so the net sees the training sources' contents in each other's styles. reduced B x C x S x S ->
    the same shape; mixing weights ~ Beta(alpha, alpha), the partner a seeded permutation."""
    import torch

    B = reduced.shape[0]
    mu = reduced.mean((2, 3), keepdim=True)
    sd = (reduced.var((2, 3), keepdim=True) + 1e-6).sqrt()
    order = list(range(B))
    rng.shuffle(order)
    lam = torch.tensor([rng.betavariate(alpha, alpha) for _ in range(B)], dtype=reduced.dtype).view(B, 1, 1, 1)
    mu2, sd2 = mu[order], sd[order]
    return (reduced - mu) / sd * (lam * sd + (1 - lam) * sd2) + (lam * mu + (1 - lam) * mu2)


def fit_reduction(net, feats: dict, seed: int, pixels_per_image: int = 256) -> float:
    """Set `net.reduce` to the whitened leading principal components of the training
    embeddings (`pixels_per_image` seeded pixels of each image). -> share of variance kept."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    X = torch.cat(
        [
            f.float().flatten(1)[:, torch.randint(0, f[0].numel(), (pixels_per_image,), generator=gen)].T
            for f in feats.values()
        ]
    )
    mean = X.mean(0)
    eigval, eigvec = torch.linalg.eigh(torch.cov((X - mean).T))
    eigval, eigvec = eigval.flip(0).clamp(min=1e-6), eigvec.flip(1)
    r = net.reduce_weight.shape[0]
    weight = eigvec[:, :r].T / eigval[:r].sqrt()[:, None]
    net.reduce_weight.copy_(weight)
    net.reduce_bias.copy_(-(weight @ mean))
    return float(eigval[:r].sum() / eigval.sum())


def ood_queries_per_image(positives, per_image: int, seed: int) -> dict:
    """Feature key -> `per_image` out-of-domain queries (`data.queries.out_of_domain_queries`)."""
    from ibisagent.data.queries import out_of_domain_queries

    rng = random.Random(f"{seed}:ood")
    keys = sorted({p[0] for p in positives}, key=str)
    return {k: out_of_domain_queries(rng, per_image) for k in keys}


def fit_presence(net, positives, negatives, ood: dict, feats, text_emb: dict, cfg: CompactTrainConfig, log=print):
    """Fit `net.presence` alone (the belief trunk is untouched), class-balanced BCE over every
    (image, query) pair: positives' queries = 1; absent targets' queries and out-of-domain
    queries (`ood`: feature key -> texts) = 0. Also stores the training queries' embeddings in
    `net.known_texts` / `net.known_emb`. Returns the training accuracy on both classes."""
    import torch
    import torch.nn.functional as F

    from ibisagent.policies.belief_net import pool_features

    pooled = {k: pool_features(v.float()[None])[0] for k, v in feats.items()}
    rows = [(p[0], t, 1.0) for p in positives for t in p[2]]
    rows += [(k, t, 0.0) for k, texts in negatives for t in texts]
    rows += [(k, t, 0.0) for k, texts in ood.items() for t in texts]
    X = torch.stack([pooled[r[0]] for r in rows])
    T = torch.stack([text_emb[r[1]] for r in rows]).float()
    Y = torch.tensor([r[2] for r in rows])
    head = net.presence
    head.mu.copy_(X.mean(0))
    head.sd.copy_(X.std(0) + 1e-3)
    weight = torch.where(Y > 0, 0.5 / (Y > 0).float().mean(), 0.5 / (Y == 0).float().mean())
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-3)
    head.train()
    for epoch in range(cfg.presence_epochs):
        perm = torch.randperm(len(Y), generator=gen)
        for i in range(0, len(Y), 256):
            j = perm[i : i + 256]
            loss = (F.binary_cross_entropy_with_logits(head(X[j], T[j]), Y[j], reduction="none") * weight[j]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (epoch + 1) % 10 == 0:
            log(f"presence epoch {epoch + 1}/{cfg.presence_epochs} loss {loss.item():.4f}")
    head.eval()
    with torch.no_grad():
        said = head(X, T) > 0
    known = sorted({t for p in positives for t in p[2]})
    net.known_texts, net.known_emb = known, torch.stack([text_emb[t] for t in known]).float()
    return {
        "pairs": len(rows),
        "train_present_kept": float(said[Y > 0].float().mean()),
        "train_absent_said_no": float((~said[Y == 0]).float().mean()),
        "known_queries": len(known),
    }


def heldout_episodes(
    policy_spec: str, samples, emb_files, max_steps: int = 10, progress=None, policy_kwargs=None, queries=None
):
    """Yield (sample, reference mask or None, episode or the IbisInputError of an unreadable
    sample): one episode per query of each sample, on the shipped tool with the image embedding
    taken from the disk cache. `queries`: sample -> query texts; default its referring query
    (seed 0). `policy_spec`: a `make_policy` spec, or a policy instance (then `policy_kwargs`
    is ignored)."""
    from ibisagent.data.queries import make_query
    from ibisagent.env.env import IbisEnv
    from ibisagent.policies import make_policy
    from ibisagent.policies.runner import run_episode
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train.tool.evaluate import prime_cache

    tool = LiteMedSAMTool(cache_entries=8)
    env = IbisEnv(tool, max_steps=max_steps)
    policy = make_policy(policy_spec, **(policy_kwargs or {})) if isinstance(policy_spec, str) else policy_spec
    for s in samples:
        try:
            image, gt = s.load()
        except IbisInputError as exc:
            yield s, None, exc
            continue
        ef = emb_files.get(s.image)
        if isinstance(ef, Path):
            prime_cache(tool, image, ef)
        # a reference baseline's one prompt (the box policy), as the evaluation harness gives it
        init = policy.initial_prompt(tool, tool.embed(image), gt) if hasattr(policy, "initial_prompt") else None
        for text in queries(s) if queries else [make_query(s, "referring", seed=0).text]:
            yield s, gt, run_episode(env, policy, image, text, gt, init_mask=init)
        if progress:
            progress()


def evaluate_compact(
    policy_spec: str, samples, emb_files, max_steps: int = 10, progress=None, policy_kwargs=None
) -> dict:
    """End-to-end held-out episodes from the query alone: final IoU overall, per category
    (organ, lesion, ...), per modality and per target, and each episode's IoU by sample id
    ("per_item", for paired comparisons: `paired_stages`)."""
    from collections import defaultdict

    from ibisagent.data.structures import lookup
    from ibisagent.metrics import iou, yes_no

    rows = []
    for s, gt, ep in heldout_episodes(policy_spec, samples, emb_files, max_steps, progress, policy_kwargs):
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
                "clicks": len(ep.clicks),
                "stop": ep.stop_reason,
                "said_no": yes_no(ep.answer) == "no",
                "mask": bool(ep.final_mask.any()),
            }
        )
    ok = [r for r in rows if "iou" in r]
    by_cat, by_mod, by_target = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in ok:
        by_cat[r["category"]].append(r["iou"])
        by_mod[r["modality"]].append(r["iou"])
        by_target[r["structure"]].append(r["iou"])
    return {
        "policy": policy_spec,
        "n": len(ok),
        "errors": len(rows) - len(ok),
        "mean_iou": float(np.mean([r["iou"] for r in ok])) if ok else float("nan"),
        "per_category": {k: {"n": len(v), "mean_iou": float(np.mean(v))} for k, v in sorted(by_cat.items())},
        "per_modality": {k: {"n": len(v), "mean_iou": float(np.mean(v))} for k, v in sorted(by_mod.items())},
        "per_target": {k: {"n": len(v), "mean_iou": float(np.mean(v))} for k, v in sorted(by_target.items())},
        "mean_steps": float(np.mean([r["steps"] for r in ok])) if ok else float("nan"),
        "no_click": float(np.mean([r["clicks"] == 0 for r in ok])) if ok else float("nan"),
        # present targets answered "no" (called absent), and episodes that end without any mask
        "called_absent": float(np.mean([r["said_no"] for r in ok])) if ok else float("nan"),
        "no_mask": float(np.mean([not r["mask"] for r in ok])) if ok else float("nan"),
        "per_item": {r["id"]: r["iou"] for r in ok},
    }


def paired_stages(base: dict, other: dict) -> dict:
    """`other` - `base` (two `evaluate_compact` results on the same split), paired by sample:
    {"n", "mean_a", "mean_b", "diff", "low", "high"} with a 95% bootstrap interval of the mean
    difference (`eval.stats.paired_difference`); `diff` > 0 means `other` is higher."""
    from ibisagent.eval.stats import paired_difference

    ids = sorted(base["per_item"].keys() & other["per_item"].keys())
    return paired_difference([base["per_item"][i] for i in ids], [other["per_item"][i] for i in ids])


def evaluate_absent(policy_spec: str, samples, emb_files, max_steps: int = 10, progress=None) -> dict:
    """Absent-target questions on held-out images (`data.queries.absent_targets`: a structure
    that cannot appear in the image): the share of episodes that stop with a "no" answer, and
    the share that stop at once (no click)."""
    from ibisagent.data.queries import absent_targets
    from ibisagent.metrics import yes_no

    said_no = at_once = n = 0
    for _, _, ep in heldout_episodes(policy_spec, absent_targets(samples, seed=1), emb_files, max_steps, progress):
        if isinstance(ep, IbisInputError):
            continue
        n += 1
        said_no += ep.stop_reason == "stop" and yes_no(ep.answer) == "no"
        at_once += not ep.clicks
    return {"policy": policy_spec, "n": n, "stop_no_accuracy": said_no / max(n, 1), "no_click": at_once / max(n, 1)}


# Disjoint from data.queries.EVERYDAY_OBJECTS (the training negatives): generalisation, not recall.
HELDOUT_OBJECTS = ("giraffe", "toaster", "sports car", "umbrella", "tennis ball", "keyboard", "coffee cup", "moon")


def evaluate_unknown_queries(policy_spec: str, samples, emb_files, per_image: int = 1, max_steps: int = 10) -> dict:
    """Out-of-domain queries on held-out images (objects not among the training negatives, and
    nonsense strings): the share of episodes that stop without a click ("no_click"), and the share
    never shown as a confident answer ("marked": no click, a "no", or a mask marked as a
    low-confidence guess, as the compact policy gives for a structure it does not know)."""
    from ibisagent.data.queries import out_of_domain_queries

    rng = random.Random("heldout-ood")
    one_per_image = list({s.image: s for s in samples}.values())
    from ibisagent.metrics import yes_no

    n = no_click = marked = 0
    for _, _, ep in heldout_episodes(
        policy_spec,
        one_per_image,
        emb_files,
        max_steps,
        queries=lambda s: out_of_domain_queries(rng, per_image, HELDOUT_OBJECTS),
    ):
        if isinstance(ep, IbisInputError):
            continue
        n += 1
        no_click += not ep.clicks
        marked += not ep.clicks or yes_no(ep.answer) == "no" or "low-confidence guess" in (ep.answer or "").lower()
    return {"policy": policy_spec, "n": n, "no_click": no_click / max(n, 1), "marked": marked / max(n, 1)}

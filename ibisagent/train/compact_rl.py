"""The RL stage of the compact policy: step-level GRPO with the reference rewards.

As the reference release trains its VLM, each training state is an expert prefix: an image,
a query, and the mask left by k simulator clicks (k uniform in 0..`max_prefix`) on the real
tool. From that state the policy samples G clicks; each click goes through the tool (one
batched decode for the whole group, on the cached image embedding) and is scored by the same
five reward functions as the VLM (`ibisagent.rewards.score_terms`, on the text the policy
would write). Advantages are normalised within the group; the objective is PPO's clipped
ratio, token-level in the VLM and one "token" (the click) here, no KL term, plus the SFT loss
on the same states (`sft_weight`, InstructGPT's PPO-ptx) to keep the belief map calibrated.

The click distribution is read off the belief map, so RL sharpens the same map the deployed
policy clicks against: a categorical over the 64 x 64 cells, positive clicks where the mask
does not cover the cell (logit = belief / T), negative clicks where it does (logit = -belief / T).
Everything is in the tool's 256 x 256 input frame; one cell is 4 x 4 pixels.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ibisagent.errors import IbisInputError


class State(NamedTuple):
    """A training target: tool features 256 x 64 x 64, reference 256 x 256 bool, query texts."""

    features: object
    target: np.ndarray
    texts: list[str]


@dataclass
class CompactRLConfig:
    minutes: float = 12.0
    max_steps: int = 1_000_000  # also stop after this many updates (tests: reproducible length)
    group_size: int = 4  # G rollouts (clicks) per state
    states_per_step: int = 8
    inner_epochs: int = 2  # optimisation passes per batch of rollouts (GRPO's mu); clipping bites from the 2nd
    lr: float = 3e-5  # 1e-4 moved the better-trained (bfloat16) SFT net too far: -0.032 held-out IoU (README)
    clip_eps: float = 0.2
    # Weight of the SFT loss on the same states (InstructGPT's "PPO-ptx"). The deployed policy
    # clicks at the deepest error of the thresholded belief map, which the click distribution
    # here does not model; without this anchor the map drifts and the policy gets worse.
    sft_weight: float = 1.0
    temperature: float = 0.25  # sharper than the raw belief: close to the deployed click on the most confident region
    max_prefix: int = 3
    seed: int = 0


def click_logits(belief, cover):
    """belief: B x 1 x 64 x 64 logits; cover: B x 64 x 64 bool (cells the mask covers).
    -> B x 8192 logits: positive clicks on cells 0..4095, negative clicks on 4096..8191."""
    import torch

    b = belief[:, 0]
    neg_inf = torch.finfo(b.dtype).min
    pos = torch.where(cover, neg_inf, b)
    neg = torch.where(cover, -b, neg_inf)
    return torch.cat([pos.flatten(1), neg.flatten(1)], 1)


def cell_click(index: int) -> tuple[int, int, int]:
    """Action index -> (x, y, label) at the cell's centre in the 256 x 256 frame."""
    label = 1 if index < 4096 else 0
    cell = index % 4096
    r, c = divmod(cell, 64)
    return 4 * c + 2, 4 * r + 2, label


def cover_cells(mask256: np.ndarray) -> np.ndarray:
    """256 x 256 bool -> 64 x 64 bool: cells at least half covered."""
    return mask256.reshape(64, 4, 64, 4).mean((1, 3)) >= 0.5


def click_text(x: int, y: int, label: int) -> str:
    from ibisagent.env.protocol import format_response

    kind = "positive" if label == 1 else "negative"
    return format_response(f"I add a {kind} point.", kind, (x + 0.5) / 256, (y + 0.5) / 256)


def expert_prefix(tool_net, items, k: int, rng: random.Random):
    """Run k simulator clicks on the real tool for each item, in lockstep.
    -> (points per item [(x, y, label)], prior logits B x 1 x 256 x 256 or None, masks B x 256 x 256 bool)."""
    import torch

    from ibisagent.tools.litemedsam import decode
    from ibisagent.train.tool import click_tensors, next_session_click

    feats = torch.stack([it.features for it in items]).float()
    points: list[list[tuple[int, int, int]]] = [[] for _ in items]
    preds = [np.zeros_like(it.target) for it in items]
    prior = None
    for _ in range(k):
        for i, it in enumerate(items):
            click = next_session_click(preds[i], it.target, rng)
            points[i].append(click if click is not None else (0, 0, -1))
        with torch.inference_mode():
            prior, _ = decode(tool_net, feats, *click_tensors(points), prior, None)
        preds = [prior[i, 0].numpy() > 0 for i in range(len(items))]
    return points, prior, preds


def group_rewards(tool_net, items, points, prior, preds, actions, step: int) -> np.ndarray:
    """Decode every sampled click (B x G) in one batch and score it with the reference rewards.
    -> B x G total rewards (mean of the five terms)."""
    import torch

    from ibisagent.eval.metrics import iou
    from ibisagent.rewards import score_terms
    from ibisagent.tools.litemedsam import decode
    from ibisagent.train.tool import click_tensors

    B, G = actions.shape
    feats = torch.stack([it.features for it in items]).float().repeat_interleave(G, 0)
    sessions = [points[i] + [cell_click(int(actions[i, g]))] for i in range(B) for g in range(G)]
    mask_in = None if prior is None else prior.repeat_interleave(G, 0)
    with torch.inference_mode():
        logits, _ = decode(tool_net, feats, *click_tensors(sessions), mask_in, None)
    rewards = np.zeros((B, G), np.float32)
    for i, it in enumerate(items):
        prev_iou = iou(preds[i], it.target) if step > 1 else None
        for g in range(G):
            after = logits[i * G + g, 0].numpy() > 0
            text = click_text(*cell_click(int(actions[i, g])))
            rewards[i, g] = score_terms(text, preds[i], after, it.target, prev_iou, step)["total"]
    return rewards


def train_compact_rl(net, positives, feats, text_emb: dict, out_dir: Path, cfg: CompactRLConfig, log=print) -> Path:
    """GRPO on `net` (the SFT belief network) for `cfg.minutes`, on the examples of
    `train.compact.build_examples` and their query embeddings (`embed_query_texts`), with the
    shipped click-trained tool. Writes out_dir/compact_policy_rl.pt and out_dir/rl_log.jsonl."""
    import torch

    from ibisagent.policies.compact import save_net
    from ibisagent.tools.litemedsam import build_model
    from ibisagent.train.compact import belief_loss, pooled_target

    items = [State(feats[p[0]], p[3], p[2]) for p in positives]
    tool_net, _ = build_model("auto")
    if not items:
        raise IbisInputError(out_dir, "no usable training targets for the RL stage")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tool_net.eval()
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    t0, step = time.perf_counter(), 0
    log_fh = (out_dir / "rl_log.jsonl").open("w")
    ema = None
    while time.perf_counter() - t0 < cfg.minutes * 60 and step < cfg.max_steps:
        batch = [items[rng.randrange(len(items))] for _ in range(cfg.states_per_step)]
        k = rng.randint(0, cfg.max_prefix)
        points, prior, preds = expert_prefix(tool_net, batch, k, rng)
        feats = torch.stack([it.features for it in batch]).float()
        text = torch.stack([text_emb[rng.choice(it.texts)] for it in batch])
        cover = torch.from_numpy(np.stack([cover_cells(p) for p in preds]))
        targets = torch.from_numpy(np.stack([pooled_target(it.target) for it in batch]))[:, None]
        present = torch.ones(len(batch))
        with torch.no_grad():
            belief, _ = net(feats, text)
            old_logp_all = torch.log_softmax(click_logits(belief, cover) / cfg.temperature, 1)
            actions = torch.multinomial(old_logp_all.exp(), cfg.group_size, replacement=True, generator=gen)
            old_logp = old_logp_all.gather(1, actions)
        rewards = group_rewards(tool_net, batch, points, prior, preds, actions.numpy(), step=k + 1)
        r = torch.from_numpy(rewards)
        adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
        for _ in range(cfg.inner_epochs):
            belief, _ = net(feats, text)
            logp = torch.log_softmax(click_logits(belief, cover) / cfg.temperature, 1).gather(1, actions)
            ratio = (logp - old_logp).exp()
            clipped = ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)
            loss = -torch.minimum(ratio * adv, clipped * adv).mean()
            if cfg.sft_weight > 0:
                loss = loss + cfg.sft_weight * belief_loss(belief, targets, present)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        step += 1
        mean_r = float(rewards.mean())
        ema = mean_r if ema is None else 0.95 * ema + 0.05 * mean_r
        log_fh.write(json.dumps({"step": step, "prefix": k, "reward": round(mean_r, 4), "ema": round(ema, 4)}) + "\n")
        if step % 10 == 0:
            log_fh.flush()
            log(f"RL step {step} mean reward {ema:.3f} {(time.perf_counter() - t0) / 60:.1f}/{cfg.minutes:.0f} min")
    log_fh.close()
    net.eval()
    return save_net(net, out_dir / "compact_policy_rl.pt", rl=asdict(cfg))

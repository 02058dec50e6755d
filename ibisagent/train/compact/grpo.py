"""The RL stage of the compact policy: GRPO over belief maps, played with the deployed click rule.

The compact policy acts by a fixed rule on its belief map (`policies.compact.decide`: of a few
candidate clicks at the deepest confident disagreements between the mask and the belief, the
one whose tool mask agrees best with the belief; stop when none brings them closer), so
the map is its only learned output and RL explores there. The policy is a Gaussian over belief
maps centred on the network's, with low-frequency noise: one value per `block` x `block` cells
(32 x 32 pixels of the tool frame) plus one offset for the whole map, which moves every
threshold of the rule at once. For each training image and query it samples G maps, plays each
as a whole episode from an empty mask with the deployed rule on the real tool (one batched
decode per step for the candidate clicks of all live episodes), and scores every turn with the
five reference rewards (`ibisagent.rewards.score_terms`, on the protocol text of the turn); an
episode's return is the mean over its turns, as for the VLM (`train.vlm.rollout`). Advantages are
normalised within the group; the objective is PPO's clipped ratio, no KL term. By default only
the net's last layer learns (`trainable="head"`): the SFT net has learnt its training images,
so what the whole net learns from their rewards does not carry over to new images, while the
map's calibration does. Training every weight (`"all"`) adds the SFT loss on the same states
(`sft_weight`, InstructGPT's PPO-ptx) to keep the map calibrated where the rewards say nothing.

Everything is in the tool's 256 x 256 input frame; one belief cell is 4 x 4 pixels.
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
from ibisagent.geometry import pixel_to_norm


class State(NamedTuple):
    """A training target: tool features 256 x 64 x 64, reference 256 x 256 bool, query texts."""

    features: object
    target: np.ndarray
    texts: list[str]


@dataclass
class CompactRLConfig:
    minutes: float = 10.0
    max_steps: int = 1_000_000  # also stop after this many updates (tests: reproducible length)
    group_size: int = 6  # G sampled belief maps (episodes) per state
    states_per_step: int = 6
    inner_epochs: int = 2  # optimisation passes per batch of rollouts (GRPO's mu); clipping bites from the 2nd
    lr: float = 3e-3  # for the head alone (README, "GRPO on the head"); all weights: 3e-5
    clip_eps: float = 0.2
    sft_weight: float = 0.0  # the SFT loss on the same states, added to the policy loss (PPO-ptx; 1.0 with "all")
    block: int = 8  # noise block side in belief cells (8: 32 x 32 pixels of the tool frame)
    sigma_block: float = 2.0  # noise standard deviation per block, belief logits
    sigma_offset: float = 2.0  # noise standard deviation of the offset of the whole map, belief logits
    max_actions: int = 8  # turns per training episode (the deployed policy takes about 3)
    # "head": only the belief net's last 1 x 1 conv (65 numbers: how its features map to logits, i.e.
    # the belief's calibration), which cannot learn the training images by heart; "all": every weight
    trainable: str = "head"
    seed: int = 0


def sample_beliefs(mean, cfg: CompactRLConfig, gen):
    """mean: B x 1 x 64 x 64 belief logits -> B x G x 64 x 64 samples of the policy."""
    import torch

    B, n, G = mean.shape[0], mean.shape[-1] // cfg.block, cfg.group_size
    noise = torch.randn(B, G, n, n, generator=gen) * cfg.sigma_block
    noise = noise + torch.randn(B, G, 1, 1, generator=gen) * cfg.sigma_offset
    return mean + noise.repeat_interleave(cfg.block, 2).repeat_interleave(cfg.block, 3)


def log_prob(samples, mean, cfg: CompactRLConfig):
    """Log density (up to a constant) of B x G x 64 x 64 samples under the policy centred on
    `mean` (B x 1 x 64 x 64) -> B x G. The noise lives on the k block means: independent with
    variance sigma_block^2, plus the shared offset along their mean (variance sigma_block^2 +
    k sigma_offset^2 there)."""
    import torch.nn.functional as F

    B, G = samples.shape[:2]
    d = F.avg_pool2d(samples - mean, cfg.block).flatten(2)  # B x G x k block means
    k = d.shape[-1]
    centre = d.mean(-1, keepdim=True)
    rest = ((d - centre) ** 2).sum(-1) / (2 * cfg.sigma_block**2)
    along = k * centre[..., 0] ** 2 / (2 * (cfg.sigma_block**2 + k * cfg.sigma_offset**2))
    return -(rest + along)


def click_text(x: int, y: int, label: int) -> str:
    """The protocol text of a click at pixel (x, y) of the 256 x 256 frame (rewards parse it)."""
    from ibisagent.env.protocol import format_response

    kind = "positive" if label == 1 else "negative"
    return format_response(f"I add a {kind} point.", kind, *pixel_to_norm(x, y, 256, 256))


def stop_text() -> str:
    """The protocol text of the rule's stop on a present target (rewards parse it)."""
    from ibisagent.env.protocol import format_response

    return format_response("The mask matches what I see, so I stop.", "stop", answer="Yes, the target is segmented.")


def decode_chunks(tool_net, features: list, points: list[list[tuple[int, int, int]]], prior, chunk: int = 48):
    """The tool's mask decoder on many prompts at once, `chunk` at a time (memory: only a chunk's
    features are stacked): features N tensors 256 x 64 x 64, points N lists of equal length of
    (x, y, label) in the 256 x 256 frame,
    prior N x 1 x 256 x 256 logits or None -> N x 1 x 256 x 256 logits."""
    import torch

    from ibisagent.tools.litemedsam_model import decode
    from ibisagent.train.tool.recipe import click_tensors

    out = []
    with torch.inference_mode():
        for a in range(0, len(points), chunk):
            mask_in = None if prior is None else prior[a : a + chunk]
            feats = torch.stack(features[a : a + chunk]).float()
            logits, _ = decode(tool_net, feats, *click_tensors(points[a : a + chunk]), mask_in, None)
            out.append(logits)
    return torch.cat(out)


def play_episodes(tool_net, items: list[State], beliefs, settings: dict, max_actions: int) -> np.ndarray:
    """Play the deployed click rule (`policies.compact.candidate_clicks` and `decide` with
    `settings`, the policy's defaults) on each belief map (N x 64 x 64 logits, one per item)
    from an empty mask on the real tool, all N episodes in lockstep: each step one batched
    decode of every live episode's candidate clicks, whose chosen outcome becomes its next
    mask. -> N returns (mean reward over turns)."""
    import torch
    import torch.nn.functional as F

    from ibisagent.metrics import iou
    from ibisagent.policies.compact import Belief, best_guess, candidate_clicks, decide
    from ibisagent.rewards import score_terms

    up = F.interpolate(beliefs[:, None].float(), size=(256, 256), mode="bilinear", align_corners=False)[:, 0].numpy()
    # As the policy: on a map with no pixel at 50%, its best guess (targets here are present).
    maps = [Belief(u if (g := best_guess(u, settings["guess_floor"])) is None else g, 1.0) for u in up]
    prob = [b.probability() for b in maps]
    targets, inside, outside = zip(*(b.regions(settings["click_margin"]) for b in maps))
    N = len(items)
    masks = [np.zeros((256, 256), bool) for _ in range(N)]
    prior = [None] * N
    points: list[list[tuple[int, int, int]]] = [[] for _ in range(N)]
    turns: list[list[float]] = [[] for _ in range(N)]
    live = list(range(N))
    for step in range(1, max_actions + 1):
        cands = {}
        for i in live:
            found = targets[i].any()
            cands[i] = (
                candidate_clicks(masks[i], targets[i], inside[i], outside[i], settings["lookahead"]) if found else []
            )
        asked = [(i, c) for i in live for c in cands[i]]
        outcomes: dict[int, list] = {i: [] for i in live}
        logits = None
        if asked:
            pts = [points[i] + [c[:3]] for i, c in asked]
            mask_in = None if step == 1 else torch.cat([prior[i] for i, _ in asked])
            logits = decode_chunks(tool_net, [items[i].features for i, _ in asked], pts, mask_in)
            for j, (i, _) in enumerate(asked):
                outcomes[i].append((logits[j, 0].numpy() > 0, j))
        clicked = []
        for i in live:
            gt, prev_iou = items[i].target, (iou(masks[i], items[i].target) if step > 1 else None)
            d = decide(masks[i], prob[i], cands[i], [o[0] for o in outcomes[i]], settings["min_gain"])
            if d.kind != "click":
                turns[i].append(score_terms(stop_text(), masks[i], None, gt, prev_iou, step)["total"])
                continue
            x, y, label, _ = d.click
            after, j = outcomes[i][d.index]
            turns[i].append(score_terms(click_text(x, y, label), masks[i], after, gt, prev_iou, step)["total"])
            points[i].append((x, y, label))
            masks[i], prior[i] = after, logits[j : j + 1]
            clicked.append(i)
        if not clicked:
            break
        live = clicked
    return np.array([np.mean(t) for t in turns], np.float32)


def train_compact_rl(net, positives, feats, text_emb: dict, out_dir: Path, cfg: CompactRLConfig, log=print) -> Path:
    """GRPO on `net` (the SFT belief network) for `cfg.minutes`, on the examples of
    `train.compact.sft.build_examples` and their query embeddings (`embed_query_texts`), with the
    shipped click-trained tool and the policy's default rules (`policy_settings`). Writes
    out_dir/compact_policy_rl.pt and out_dir/rl_log.jsonl."""
    import torch

    from ibisagent.policies.belief_net import save_net
    from ibisagent.policies.compact import policy_settings
    from ibisagent.tools.litemedsam_model import build_model
    from ibisagent.train.compact.sft import belief_loss, pooled_target

    items = [State(feats[p[0]], p[3], p[2]) for p in positives]
    if not items:
        raise IbisInputError(out_dir, "no usable training targets for the RL stage")
    tool_net, _ = build_model("auto")
    settings = policy_settings()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tool_net.eval()
    net.train()
    if cfg.trainable not in ("all", "head"):
        raise IbisInputError("trainable", f"expected all or head, got {cfg.trainable!r}")
    params = list((net.head if cfg.trainable == "head" else net).parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    t0, step = time.perf_counter(), 0
    log_fh = (out_dir / "rl_log.jsonl").open("w")
    ema = None
    while time.perf_counter() - t0 < cfg.minutes * 60 and step < cfg.max_steps:
        batch = [items[rng.randrange(len(items))] for _ in range(cfg.states_per_step)]
        feats_b = torch.stack([it.features for it in batch]).float()
        text = torch.stack([text_emb[rng.choice(it.texts)] for it in batch])
        if cfg.sft_weight > 0:  # the SFT loss's pooled references, only when it is used
            targets = torch.from_numpy(np.stack([pooled_target(it.target) for it in batch]))[:, None]
        with torch.no_grad():
            mean, _ = net(feats_b, text)
            samples = sample_beliefs(mean, cfg, gen)
            old_logp = log_prob(samples, mean, cfg)
        episodes = [it for it in batch for _ in range(cfg.group_size)]
        returns = play_episodes(tool_net, episodes, samples.flatten(0, 1), settings, cfg.max_actions)
        r = torch.from_numpy(returns).reshape(len(batch), cfg.group_size)
        adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
        for _ in range(cfg.inner_epochs):
            belief, _ = net(feats_b, text)
            ratio = (log_prob(samples, belief, cfg) - old_logp).exp()
            clipped = ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)
            loss = -torch.minimum(ratio * adv, clipped * adv).mean()
            if cfg.sft_weight > 0:
                loss = loss + cfg.sft_weight * belief_loss(belief, targets, torch.ones(len(batch)))[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        step += 1
        mean_r = float(returns.mean())
        ema = mean_r if ema is None else 0.95 * ema + 0.05 * mean_r
        log_fh.write(json.dumps({"step": step, "reward": round(mean_r, 4), "ema": round(ema, 4)}) + "\n")
        if step % 10 == 0:
            log_fh.flush()
            log(f"RL step {step} mean return {ema:.3f} {(time.perf_counter() - t0) / 60:.1f}/{cfg.minutes:.0f} min")
    log_fh.close()
    net.eval()
    return save_net(net, out_dir / "compact_policy_rl.pt", rl=asdict(cfg))

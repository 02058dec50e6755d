"""Click training for LiteMedSAM's prompt path (`ibisagent train tool`).

LiteMedSAM was trained with box prompts only and barely answers clicks. This fine-tunes the
prompt encoder and mask decoder (the image encoder stays frozen; its embeddings are computed
once and cached on disk) with simulated interactive sessions, RITM-style:

- a first positive click (the deepest point of the target, or a random point well inside it);
- further clicks in the error regions of the model's *own* previous prediction (the click
  simulator of spec section 4, with some randomness in where inside the region);
- the previous low-res logits fed back as the mask input (detached); loss (BCE + Dice on the
  256 x 256 low-res logits, plus MSE of the IoU head, plus BCE over small disks around the clicks
  so the next mask agrees with each click) at the first and the last click of each session, the
  clicks between run without gradients (RITM's iterative scheme, 3x cheaper);
- a random number of clicks per session; some sessions start from a corrupted mask (the
  refinement case); some are plain box prompts so box use does not regress;
- a 10x larger step for the point / padding / no-mask embeddings than for the decoder: box
  training never touched them, and at the decoder's rate a negative click stays a second
  positive one (the mask grows around it; `ibisagent eval heldout tool` reports the share of
  clicks honoured).

Everything is in the 256 x 256 model-input frame: targets are the reference masks resized with
the image (longest side 256) and zero-padded; points are (x, y) pixels of that frame.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ibisagent.clicker import click_in, next_click
from ibisagent.data.pairs import Sample
from ibisagent.errors import IbisInputError
from ibisagent.io.jsonl import JsonlAppender

MIN_TARGET_PIXELS = 4  # in the 256 x 256 frame; smaller targets cannot be represented
EMBED_PREFIXES = ("prompt_encoder.point_embeddings", "prompt_encoder.not_a_point_embed", "prompt_encoder.no_mask_embed")


@dataclass
class ToolTrainConfig:
    minutes: float = 40.0  # wall-clock budget for the optimisation loop
    max_steps: int = 100_000
    batch_size: int = 8
    max_clicks: int = 6  # clicks per simulated session: uniform in 1..max_clicks
    lr: float = 1e-3  # mask decoder and the prompt encoder's mask downscaling
    # The point / padding / no-mask embeddings are single 256-d vectors that box training never
    # used; at the decoder's rate they move ~1% in a 30-minute run and negative clicks stay
    # meaningless (they grow the mask), so they get a much larger step.
    lr_embed: float = 1e-2
    init: str = "original"  # prompt-path weights to start from: "original", "clicks" or a .pt path
    weight_decay: float = 0.01
    warmup_steps: int = 30
    p_box: float = 0.15  # sessions that are a box prompt (keeps box use)
    p_refine: float = 0.15  # sessions that start from a corrupted mask as prior
    p_random_first: float = 0.5  # first click random inside the target instead of its deepest point
    # Weight of a BCE term averaged over small disks around the session's clicks. The whole-mask
    # BCE + Dice barely notices a 5-pixel error under a click, and without this term most clicks
    # after the third are not honoured (the next mask still disagrees at the clicked pixel).
    click_loss: float = 1.0
    click_radius: int = 3  # disk radius, model-frame pixels
    heldout_percent: int = 15
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 50
    extra: dict = field(default_factory=dict)


@dataclass
class TrainItem:
    """One target in the 256 frame: features 256 x 64 x 64 (fp16), target 256 x 256 bool."""

    features: object
    target: np.ndarray
    input_size: tuple[int, int]
    sample_id: str


def target_in_frame(mask: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """H x W bool -> 256 x 256 bool in the model-input frame (area resize, >= 0.5, zero pad)."""
    import cv2

    from ibisagent.tools.litemedsam_model import INPUT_SIZE

    h, w = input_size
    small = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
    out = np.zeros((INPUT_SIZE, INPUT_SIZE), bool)
    out[:h, :w] = small
    return out


def prepare_items(samples: list[Sample], emb_files: dict, progress=None) -> tuple[list[TrainItem], dict]:
    """Load masks and cached embeddings; count what is skipped and why."""
    from ibisagent.io.images import load_mask
    from ibisagent.train.embedding_cache import load_embedding

    items, skipped = [], {"unreadable": 0, "empty": 0, "tiny": 0}
    feats_by_file: dict = {}
    for s in samples:
        ef = emb_files.get(s.image)
        if not isinstance(ef, Path):
            skipped["unreadable"] += 1
        else:
            if ef not in feats_by_file:
                feats_by_file[ef] = load_embedding(ef)
            e = feats_by_file[ef]
            try:
                mask = load_mask(s.mask, shape=tuple(e["original_size"]))
            except IbisInputError:
                skipped["unreadable"] += 1
                mask = None
            if mask is not None:
                if not mask.any():
                    skipped["empty"] += 1
                else:
                    t = target_in_frame(mask, tuple(e["input_size"]))
                    if t.sum() < MIN_TARGET_PIXELS:
                        skipped["tiny"] += 1
                    else:
                        items.append(TrainItem(e["features"], t, tuple(e["input_size"]), s.id))
        if progress:
            progress()
    return items, skipped


def next_session_click(pred: np.ndarray, gt: np.ndarray, rng: random.Random) -> tuple[int, int, int] | None:
    """The simulator's rule on the model's own prediction (fix the larger error by depth), a random
    pixel at least half as deep 30% of the time: (x, y, label) or None."""
    click = next_click(pred, gt, rng, p_random=0.3)
    return None if click is None else click[:3]


def click_tensors(points: list[list[tuple[int, int, int]]]):
    """Per-item clicks [(x, y, label)] (equal lengths, label -1 = padding) -> (B x N x 2 float
    points, B x N int64 labels), as `tools.litemedsam_model.decode` takes them."""
    import torch

    pts = torch.tensor([[p[:2] for p in pp] for pp in points], dtype=torch.float32)
    labs = torch.tensor([[p[2] for p in pp] for pp in points], dtype=torch.int64)
    return pts, labs


def click_disks(points: list[list[tuple[int, int, int]]], size: int, radius: int) -> np.ndarray:
    """B x size x size float32: 1 within `radius` pixels of any real click (label != -1) of each item."""
    import cv2

    out = np.zeros((len(points), size, size), np.float32)
    for i, pp in enumerate(points):
        for x, y, label in pp:
            if label != -1:
                cv2.circle(out[i], (int(x), int(y)), radius, 1.0, thickness=-1)
    return out


def corrupt_mask(gt: np.ndarray, rng: random.Random) -> np.ndarray:
    """A plausible wrong given mask: dilated, eroded or shifted reference."""
    import cv2

    k = rng.choice([5, 9, 15])
    kernel = np.ones((k, k), np.uint8)
    kind = rng.choice(["dilate", "erode", "shift"])
    m = gt.astype(np.uint8)
    if kind == "dilate":
        return cv2.dilate(m, kernel) > 0
    if kind == "erode":
        out = cv2.erode(m, kernel) > 0
        return out if out.any() else gt.copy()
    dx, dy = rng.randint(-12, 12), rng.randint(-12, 12)
    return np.roll(np.roll(gt, dy, axis=0), dx, axis=1)


def session_losses(net, batch: list[TrainItem], cfg: ToolTrainConfig, rng: random.Random):
    """Simulate one session per item (all items in lockstep) and return the summed loss and stats."""
    import torch
    import torch.nn.functional as F

    from ibisagent.tools.litemedsam_model import decode, mask_to_lowres_logits

    B = len(batch)
    feats = torch.stack([it.features for it in batch]).float()
    gts = np.stack([it.target for it in batch])
    gt_t = torch.from_numpy(gts).float()[:, None]
    valid = np.zeros_like(gts)
    for i, it in enumerate(batch):
        valid[i, : it.input_size[0], : it.input_size[1]] = True
    valid_t = torch.from_numpy(valid).float()[:, None]

    def loss_of(logits, iou_pred, clicks=None):
        per_px = F.binary_cross_entropy_with_logits(logits, gt_t, reduction="none")
        bce = (per_px * valid_t).sum((1, 2, 3)) / valid_t.sum((1, 2, 3))
        p = torch.sigmoid(logits) * valid_t
        dice = 1 - (2 * (p * gt_t).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + gt_t.sum((1, 2, 3)) + 1)
        with torch.no_grad():
            hard = (logits > 0).float() * valid_t
            inter = (hard * gt_t).sum((1, 2, 3))
            union = ((hard + gt_t) > 0).float().sum((1, 2, 3))
            true_iou = inter / union.clamp(min=1)
        mse = F.mse_loss(iou_pred[:, 0], true_iou)
        total = (bce + dice).mean() + mse
        if clicks is not None and cfg.click_loss > 0:
            disks = torch.from_numpy(click_disks(clicks, logits.shape[-1], cfg.click_radius))[:, None]
            if disks.any():
                total = total + cfg.click_loss * (per_px * disks).sum() / disks.sum()
        return total, true_iou

    if rng.random() < cfg.p_box:
        boxes = []
        for it in batch:
            ys, xs = np.nonzero(it.target)
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            jw, jh = 0.1 * (x1 - x0 + 1), 0.1 * (y1 - y0 + 1)
            boxes.append(
                [
                    x0 + rng.uniform(-jw, jw),
                    y0 + rng.uniform(-jh, jh),
                    x1 + rng.uniform(-jw, jw),
                    y1 + rng.uniform(-jh, jh),
                ]
            )
        logits, iou_pred = decode(net, feats, None, None, None, torch.tensor(boxes, dtype=torch.float32))
        loss, tiou = loss_of(logits, iou_pred)
        return loss, {"mode": "box", "iou_last": float(tiou.mean()), "clicks": 0}

    n_clicks = rng.randint(1, cfg.max_clicks)
    refine = rng.random() < cfg.p_refine
    if refine:
        starts = [corrupt_mask(it.target, rng) for it in batch]
        prior = torch.cat(
            [
                mask_to_lowres_logits(s[: it.input_size[0], : it.input_size[1]], it.input_size)
                for s, it in zip(starts, batch)
            ]
        )
        preds = [s & v for s, v in zip(starts, valid)]
    else:
        prior = None
        preds = [np.zeros_like(g) for g in gts]
    points: list[list[tuple[int, int, int]]] = [[] for _ in batch]
    total = 0.0
    tiou = None
    for k in range(n_clicks):
        for i, it in enumerate(batch):
            if k == 0 and not refine:
                xy = click_in(it.target, rng, randomise=rng.random() < cfg.p_random_first)
                click = (xy[0], xy[1], 1)
            else:
                click = next_session_click(preds[i], it.target, rng)
            # A session with nothing left to fix repeats a padding point (label -1: ignored).
            points[i].append(click if click is not None else (0, 0, -1))
        pts, labs = click_tensors(points)
        # Gradients at the first and the last click (the costly backward pass); the clicks in
        # between only move the session along, as in RITM's iterative training.
        with_grad = k in (0, n_clicks - 1)
        with torch.set_grad_enabled(with_grad):
            logits, iou_pred = decode(net, feats, pts, labs, prior, None)
            loss, tiou = loss_of(logits, iou_pred, points if with_grad else None)
        if with_grad:
            total = total + loss / (1 if n_clicks == 1 else 2)
        prior = logits.detach()
        preds = [(logits[i, 0].detach().numpy() > 0) & valid[i] for i in range(B)]
    return total, {"mode": "refine" if refine else "clicks", "iou_last": float(tiou.mean()), "clicks": n_clicks}


def lr_at(step: int, cfg: ToolTrainConfig, total_steps: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def save_checkpoint(path: Path, net, opt, step: int, elapsed: float, rng: random.Random, cfg: ToolTrainConfig) -> None:
    import io

    import torch

    from ibisagent.io.images import atomic_write_bytes
    from ibisagent.tools.litemedsam_model import prompt_path_state

    buf = io.BytesIO()
    torch.save(
        {
            "state_dict": prompt_path_state(net, half=False),
            "optimizer": opt.state_dict(),
            "step": step,
            "elapsed": elapsed,
            "rng": rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(cfg),
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def train_prompt_path(items: list[TrainItem], out_dir: Path, cfg: ToolTrainConfig, log=print) -> Path:
    """Optimise the prompt path on `items` for `cfg.minutes`; resumes from out_dir/checkpoint.pt.
    Writes out_dir/litemedsam_clicks.pt (fp16 prompt path) and out_dir/train_log.jsonl."""
    import torch

    from ibisagent.io.images import atomic_write_bytes
    from ibisagent.tools.litemedsam_model import build_model, prompt_path_state

    if not items:
        raise IbisInputError(out_dir, "no usable training targets")
    torch.set_num_threads(cfg.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    net, _ = build_model(cfg.init)
    net.image_encoder.requires_grad_(False)
    named = [(n, p) for n, p in net.named_parameters() if n.startswith(("prompt_encoder.", "mask_decoder."))]
    params = [p for _, p in named]
    embeds = [p for n, p in named if n.startswith(EMBED_PREFIXES)]
    rest = [p for n, p in named if not n.startswith(EMBED_PREFIXES)]
    net.prompt_encoder.train()
    net.mask_decoder.train()
    opt = torch.optim.AdamW(
        # each group's rate is the schedule's times its "scale" (set every step below)
        [{"params": rest, "scale": 1.0}, {"params": embeds, "scale": cfg.lr_embed / cfg.lr}],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    step, elapsed = 0, 0.0
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["state_dict"], strict=False)
        opt.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed from {ckpt} at step {step} ({elapsed / 60:.1f} min done)")
    budget = cfg.minutes * 60
    # Steps expected within the budget, for the cosine schedule; re-estimated as we go.
    est_total = cfg.max_steps
    order: list[int] = []
    log_fh = JsonlAppender(out_dir / "train_log.jsonl")  # a resumed run continues the log
    t_start = time.perf_counter() - elapsed
    ema = None
    while step < cfg.max_steps and elapsed < budget:
        if not order:
            order = list(range(len(items)))
            rng.shuffle(order)
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = [items[i] for i in idx]
        if step >= 5:
            est_total = min(cfg.max_steps, int(step * budget / max(elapsed, 1e-6)))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, est_total) * g["scale"]
        loss, stats = session_losses(net, batch, cfg, rng)
        if not torch.isfinite(loss):
            log(f"step {step}: non-finite loss, batch skipped")
            opt.zero_grad(set_to_none=True)
            step += 1
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        elapsed = time.perf_counter() - t_start
        value = loss.item()
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        row = {
            "step": step,
            "loss": round(value, 4),
            "ema": round(ema, 4),
            "lr": opt.param_groups[0]["lr"],
            "elapsed": round(elapsed, 1),
            **stats,
        }
        log_fh.write(row)
        if step % 10 == 0:
            log(
                f"step {step} loss {ema:.3f} last-click IoU {stats['iou_last']:.3f} ({stats['mode']}) {elapsed / 60:.1f}/{cfg.minutes:.0f} min"
            )
        if step % cfg.checkpoint_every == 0:
            save_checkpoint(ckpt, net, opt, step, elapsed, rng, cfg)
    save_checkpoint(ckpt, net, opt, step, elapsed, rng, cfg)
    log_fh.close()
    import io

    buf = io.BytesIO()
    torch.save({"state_dict": prompt_path_state(net, half=True), "steps": step, "config": asdict(cfg)}, buf)
    weights = out_dir / "litemedsam_clicks.pt"
    atomic_write_bytes(weights, buf.getvalue())
    return weights

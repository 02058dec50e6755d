"""Experiment (docs/experiments.md, "proposal-then-rank"): on the leave-source-out folds of
`ibisagent eval lso`, does ranking the tool's own object proposals by the query find the target
on new sources better than the compact policy's belief map?

For every image the tool answers a 4 x 4 grid of single positive clicks (16 proposals, from the
cached embedding). Each proposal is described by the image embedding averaged inside it and over
the whole image, its area, centre and the tool's own score. Per fold, a small scorer of
(proposal, query sentence embedding) is trained on the training sources' targets (listwise:
softmax over an image's proposals against softmax(IoU / 0.1)) and, on the fold's evaluation
targets, its top proposal is the answer (one click). Reported beside: the best proposal (an upper
bound for any ranker), the tool's own top score (text-free), and the compact policy's episodes
from a finished `eval lso` run on the same targets (paired).

    # after: IBISAGENT_ENCODER_PRECISION=bf16 ibisagent eval lso DATA --out runs/lso
    IBISAGENT_ENCODER_PRECISION=bf16 python scripts/experiments/proposal_rank.py DATA --lso runs/lso

About 20 minutes on 2 cores with a warm embedding cache (the same cache `eval lso` fills).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

GRID = 4


def proposals_of(tool, e: dict):
    """Cached embedding record -> (P x 1 x 256 x 256 low-res logits, P predicted IoUs, P masks at the
    original size), P = GRID x GRID single positive clicks through the tool."""
    from ibisagent.tools.base import Embedding

    emb = Embedding("proposals", e["features"].float()[None], tuple(e["original_size"]), tuple(e["input_size"]))
    H, W = emb.original_size
    outs = [
        tool.predict(emb, np.array([[(i + 0.5) / GRID * W, (j + 0.5) / GRID * H]]), np.array([1]))
        for j in range(GRID)
        for i in range(GRID)
    ]
    low = torch.cat([o.logits.reshape(1, 1, 256, 256).float() for o in outs])
    return low, torch.tensor([o.score for o in outs]), [o.mask for o in outs]


def describe(e: dict, low) -> np.ndarray:
    """P x (256 inside + 256 whole image + area, x, y) proposal descriptors."""
    feats = e["features"].float()  # 256 x 64 x 64
    h, w = e["input_size"]
    inside = (low[:, 0] > 0).float()  # P x 256 x 256 in the tool frame
    cells = nn.functional.avg_pool2d(inside[:, None], 4)[:, 0]  # P x 64 x 64
    area = cells.sum((1, 2)).clamp(min=1e-3)
    pooled = torch.einsum("pyx,cyx->pc", cells, feats) / area[:, None]
    whole = feats[:, : max(1, h // 4), : max(1, w // 4)].mean((1, 2))
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cx = (cells * xs).sum((1, 2)) / area / max(1, w // 4)
    cy = (cells * ys).sum((1, 2)) / area / max(1, h // 4)
    frac = area / max(1, (h // 4) * (w // 4))
    geo = torch.stack([frac, cx, cy], 1)
    return torch.cat([pooled, whole[None].expand(len(low), -1), geo], 1).numpy().astype(np.float32)


class Scorer(nn.Module):
    def __init__(self, dim: int, text_dim: int = 384, width: int = 128):
        super().__init__()
        self.region = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, width))
        self.text = nn.Sequential(nn.Linear(text_dim, width), nn.ReLU(), nn.Linear(width, width))
        self.out = nn.Sequential(nn.Linear(3 * width + 1, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, regions, text, score):
        """regions B x P x dim, text B x text_dim, score B x P -> B x P logits"""
        a = self.region(regions)
        b = self.text(text)[:, None].expand_as(a)
        return self.out(torch.cat([a, b, a * b, score[..., None]], -1))[..., 0]


def train_scorer(rows, desc, scores, text_emb, seed: int, epochs: int = 30) -> tuple[Scorer, np.ndarray, np.ndarray]:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    all_desc = np.concatenate([desc[r["image"]] for r in rows])
    mu, sd = all_desc.mean(0), all_desc.std(0) + 1e-4
    net = Scorer(all_desc.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(epochs):
        rng.shuffle(rows)
        for i in range(0, len(rows), 32):
            batch = rows[i : i + 32]
            reg = torch.from_numpy(np.stack([(desc[r["image"]] - mu) / sd for r in batch]))
            txt = torch.stack([text_emb[rng.choice(r["texts"])] for r in batch])
            sc = torch.stack([scores[r["image"]] for r in batch])
            target = torch.softmax(torch.tensor(np.stack([r["ious"] for r in batch])) / 0.1, 1)
            loss = -(target * torch.log_softmax(net(reg, txt, sc), 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval(), mu, sd


def main() -> None:
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.queries import make_query
    from ibisagent.eval.stats import bootstrap_ci, paired_difference
    from ibisagent.metrics import iou
    from ibisagent.policies.text_encoder import embed_texts
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train import DEFAULT_CACHE_DIR
    from ibisagent.train.compact.sft import query_texts
    from ibisagent.train.embedding_cache import embed_images, load_embedding
    from ibisagent.train.leave_source_out import LSOConfig, per_source, plan, source_of

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--lso", type=Path, required=True, help="a finished `eval lso` run folder (default settings)")
    ap.add_argument("--train-per-source", type=int, default=8, help="training images per source for the scorer")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = LSOConfig()
    samples = collect_pairs(args.data)
    fold_of, pool, targets = plan(samples, cfg)
    pool = per_source(pool, args.train_per_source, cfg.seed, by_image=True)
    tool = LiteMedSAMTool(cache_entries=1)
    images = sorted({s.image for s in pool + targets})
    emb_files = embed_images(tool, images, DEFAULT_CACHE_DIR)
    by_image: dict[Path, list] = {}
    for s in pool + targets:
        by_image.setdefault(s.image, []).append(s)
    cached = args.lso / "proposals.pt"  # the proposals are computed once; a rerun only ranks
    desc, scores, ious = torch.load(cached, weights_only=False) if cached.exists() else ({}, {}, {})
    for k, img in enumerate(images):
        ef = emb_files.get(img)
        if img in desc or not isinstance(ef, Path):
            continue
        e = load_embedding(ef)
        low, score, masks = proposals_of(tool, e)
        desc[img], scores[img] = describe(e, low), score.float()
        for s in {x.id: x for x in by_image[img]}.values():
            _, gt = s.load()
            ious[s.id] = np.array([iou(m, gt) for m in masks], np.float32)
        if k % 100 == 0:
            print(f"proposals: {k}/{len(images)} images", flush=True)
    torch.save((desc, scores, ious), cached)
    missing = [f for f in range(cfg.folds) if not (args.lso / f"fold_{f}.json").exists()]
    if missing:
        raise SystemExit(
            f"proposals saved to {cached}; folds {missing} of {args.lso} are not done yet: rerun after them"
        )
    texts = {s.id: query_texts(s, 3) for s in pool}
    eval_text = {s.id: make_query(s, "referring", seed=0).text for s in targets}
    all_texts = sorted({t for v in texts.values() for t in v} | set(eval_text.values()))
    text_emb = dict(zip(all_texts, embed_texts(all_texts)))
    results = {"ranked": {}, "best": {}, "tool_score": {}, "compact": {}}
    for fold in range(cfg.folds):
        record = json.loads((args.lso / f"fold_{fold}.json").read_text())
        train = [s for s in pool if fold_of[source_of(s)] != fold and s.id in ious and s.image in desc]
        rows = [{"image": s.image, "ious": ious[s.id], "texts": texts[s.id]} for s in train]
        net, mu, sd = train_scorer(rows, desc, scores, text_emb, cfg.seed)
        held = [s for s in targets if fold_of[source_of(s)] == fold and s.id in ious and s.image in desc]
        with torch.no_grad():
            for s in held:
                reg = torch.from_numpy((desc[s.image] - mu) / sd)[None]
                logit = net(reg, text_emb[eval_text[s.id]][None], scores[s.image][None])[0]
                results["ranked"][s.id] = float(ious[s.id][int(logit.argmax())])
                results["best"][s.id] = float(ious[s.id].max())
                results["tool_score"][s.id] = float(ious[s.id][int(scores[s.image].argmax())])
                results["compact"][s.id] = record["results"]["compact"]["per_item"].get(s.id, float("nan"))
        print(
            f"fold {fold}: ranked {np.mean([results['ranked'][s.id] for s in held]):.3f} over {len(held)}", flush=True
        )
    ids = sorted(i for i in results["compact"] if not np.isnan(results["compact"][i]))
    summary = {}
    for name, v in results.items():
        m = float(np.mean([v[i] for i in ids]))
        lo, hi = bootstrap_ci([v[i] for i in ids])
        summary[name] = {"mean_iou": m, "interval": [lo, hi]}
        print(f"{name}: {m:.3f} [{lo:.3f}, {hi:.3f}] over {len(ids)} targets")
    d = paired_difference([results["compact"][i] for i in ids], [results["ranked"][i] for i in ids])
    summary["ranked_minus_compact"] = d
    print(f"ranked - compact: {d}")
    (args.lso / "proposal_rank.json").write_text(json.dumps({"summary": summary, "per_item": results}, indent=1))


if __name__ == "__main__":
    main()

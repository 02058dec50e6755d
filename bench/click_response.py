"""Does the tool answer each click? Share of oracle clicks honoured, by the depth of the error
they fix and by click number, on held-out images (the finding behind `train tool`'s click loss).

    python bench/click_response.py ../shared/data --weights clicks original [--clicks 8] [--every 2]

A click is honoured when the next mask agrees with it at the clicked pixel (inside for a positive
click, outside for a negative one). Depth is the oracle's distance from the click to the error
region's edge, in pixels of the tool's 256 x 256 input frame: a click on a 1-pixel sliver cannot
be answered at that resolution, one 8 pixels deep should be. Same split by image as `train tool`;
embeddings from its disk cache.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEPTH_BINS = ((0, 1), (1, 2), (2, 4), (4, 8), (8, float("inf")))


def episode(env, image, gt, clicks: int, frame_scale: float) -> tuple[list[float], list[tuple[float, bool, int]]]:
    """Oracle clicks on one target (the shared env + oracle loop, no early stop) -> (IoU after
    each click, padded to `clicks`; [(error depth in frame px, honoured, label)] per click)."""
    from ibisagent.io.rle import rle_decode
    from ibisagent.metrics import click_honoured
    from ibisagent.policies.oracle import OraclePolicy, error_distance
    from ibisagent.policies.runner import run_episode

    ep = run_episode(env, OraclePolicy(iou_threshold=2.0), image, "Segment the target.", gt)
    before, records = np.zeros_like(gt), []
    for step in (s for s in ep.steps if s.click is not None and s.mask is not None):
        x, y, label = step.click
        region = gt & ~before if label == 1 else ~gt & before
        after = rle_decode(step.mask)
        records.append((float(error_distance(region)[y, x]) * frame_scale, click_honoured(after, step.click), label))
        before = after
    curve = ep.iou_curve
    return curve + [1.0 if not curve else curve[-1]] * (clicks - len(curve)), records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--weights", nargs="+", default=["clicks"], help="original, clicks or a .pt path")
    ap.add_argument("--clicks", type=int, default=8)
    ap.add_argument("--every", type=int, default=2, help="use every k-th held-out pair (speed)")
    ap.add_argument("--heldout", type=int, default=15)
    from ibisagent.train import DEFAULT_CACHE_DIR

    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args = ap.parse_args()

    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.splits import split_by_image
    from ibisagent.env.env import IbisEnv
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.tools.litemedsam_model import INPUT_SIZE
    from ibisagent.train.embedding_cache import cache_path
    from ibisagent.train.tool_eval import prime_cache

    _, held = split_by_image(collect_pairs(args.data), args.heldout)
    emb_files = {s.image: cache_path(args.cache_dir, s.image) for s in held[:: args.every]}
    held = [s for s in held[:: args.every] if emb_files[s.image].exists()]
    print(f"{len(held)} held-out targets, {args.clicks} oracle clicks each")
    for weights in args.weights:
        tool = LiteMedSAMTool(weights=weights, cache_entries=4)
        # no repeat rule: an unanswered click is repeated, and counted, as an annotator would
        env = IbisEnv(tool, max_steps=args.clicks, repeat_limit=10**6)
        curves, records, by_click = [], [], []
        for s in held:
            image, gt = s.load()
            prime_cache(tool, image, emb_files[s.image])
            curve, recs = episode(env, image, np.asarray(gt, bool), args.clicks, INPUT_SIZE / max(gt.shape))
            curves.append(curve)
            records += recs
            by_click += [(k, r[1]) for k, r in enumerate(recs)]
        c, r = np.array(curves), np.array(records, float)
        ks = [k for k in (1, 3, 5, args.clicks) if k <= args.clicks]
        print(f"\n{weights}: IoU after " + ", ".join(f"{k}: {c[:, k - 1].mean():.3f}" for k in dict.fromkeys(ks)))
        print(
            f"  honoured, all clicks: {r[:, 1].mean():.2f} (positive {r[r[:, 2] == 1, 1].mean():.2f}, negative {r[r[:, 2] == 0, 1].mean():.2f})"
        )
        for lo, hi in DEPTH_BINS:
            m = (r[:, 0] >= lo) & (r[:, 0] < hi)
            if m.any():
                print(f"  error depth {lo:g}-{hi:g} px: {m.sum():4d} clicks, honoured {r[m, 1].mean():.2f}")
        b = np.array(by_click, float)
        print(
            "  honoured by click number: "
            + " ".join(f"{b[b[:, 0] == k, 1].mean():.2f}" for k in range(args.clicks) if (b[:, 0] == k).any())
        )


if __name__ == "__main__":
    main()

"""The held-out split of `train compact` for the compact-policy benches: shared arguments and loading."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def heldout_parser(doc: str, many_weights: bool = False) -> argparse.ArgumentParser:
    """A parser with the arguments every compact bench takes: data folders, --weights (one file, or
    several with `many_weights`), --heldout (percent of images), --split / --val (the held-out split
    or the validation split of `bench/compact_variants.py`), --cache-dir (the embedding cache
    `train compact` fills)."""
    from ibisagent.train import DEFAULT_CACHE_DIR

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", type=Path)
    default = "ibisagent/policies/weights/compact_policy.pt"
    if many_weights:
        ap.add_argument("--weights", nargs="+", default=[default])
    else:
        ap.add_argument("--weights", default=default)
    ap.add_argument("--heldout", type=int, default=15)
    ap.add_argument(
        "--split",
        choices=["heldout", "val"],
        default="heldout",
        help="heldout: the split train compact reports; val: the validation images of bench/compact_variants.py "
        "(training images of the full run: use it with weights trained by that script)",
    )
    ap.add_argument("--val", type=int, default=10, help="percent of images after the held-out ones (--split val)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument(
        "--embed",
        action="store_true",
        help="embed the split's images missing from --cache-dir first (as train compact would; e.g. a "
        "bf16 cache with IBISAGENT_ENCODER_PRECISION=bf16)",
    )
    return ap


def heldout_samples(args) -> tuple[list, dict]:
    """-> (samples of the split `args` names, image path -> cached embedding file for those already embedded)."""
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.splits import split_by_image, validation_split
    from ibisagent.train.embedding_cache import cached_embeddings

    train, held = split_by_image(collect_pairs(args.data), args.heldout)
    if args.split == "val":
        _, held = validation_split(train, args.heldout, args.val)
    if args.embed:
        from ibisagent.tools.litemedsam import LiteMedSAMTool
        from ibisagent.train.embedding_cache import embed_images

        images = sorted({s.image for s in held})
        missing = len(images) - len(cached_embeddings(held, args.cache_dir))
        t0 = time.perf_counter()
        embed_images(LiteMedSAMTool(weights="original"), images, args.cache_dir)
        print(f"embedded {missing} of {len(images)} images (the uncached ones) in {time.perf_counter() - t0:.1f} s")
    return held, cached_embeddings(held, args.cache_dir)


def with_belief(weights: str, forward):
    """The compact policy of `weights` whose net is replaced by `forward(feats B x 256 x 64 x 64, text
    B x 384) -> (belief logits B x 1 x H x H, presence logits B)`; novelty (the training queries)
    stays that of `weights`."""
    import torch

    from ibisagent.policies.compact import CompactPolicy

    policy = CompactPolicy(weights)

    class Belief(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.known_texts, self.known_emb = policy.net.known_texts, policy.net.known_emb

        def forward(self, feats, text):
            return forward(feats, text)

    policy.net = Belief().eval()
    return policy


def print_episodes(key: str, name: str, policy, held, emb_files, max_steps: int = 20) -> None:
    """Play `policy` on the held-out targets (`train.compact.evaluate_compact`) and print one JSON line:
    {key: name, n, mean_iou, and the mean IoU of each category with at least 10 targets}."""
    import json

    from ibisagent.train.compact import evaluate_compact

    res = evaluate_compact(policy, held, emb_files, max_steps)
    cats = {k: round(v["mean_iou"], 3) for k, v in res["per_category"].items() if v["n"] >= 10}
    print(json.dumps({key: name, "n": res["n"], "mean_iou": round(res["mean_iou"], 4), **cats}), flush=True)

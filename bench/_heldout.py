"""The held-out split of `train compact` for the compact-policy benches: shared arguments and loading."""

from __future__ import annotations

import argparse
from pathlib import Path


def heldout_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the arguments every compact bench takes: data folders, --weights, --heldout
    (percent of images), --cache-dir (the embedding cache `train compact` fills)."""
    from ibisagent.train import DEFAULT_CACHE_DIR

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--weights", default="ibisagent/policies/weights/compact_policy.pt")
    ap.add_argument("--heldout", type=int, default=15)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    return ap


def heldout_samples(args) -> tuple[list, dict]:
    """-> (held-out samples, image path -> cached embedding file for those already embedded)."""
    from ibisagent.cli.train import collect_pairs
    from ibisagent.data.splits import split_by_image
    from ibisagent.train.embedding_cache import cached_embeddings

    _, held = split_by_image(collect_pairs(args.data), args.heldout)
    return held, cached_embeddings(held, args.cache_dir)

"""Held-out oracle-click evaluation of LiteMedSAM prompt paths (the numbers of the model card).

    python bench/eval_tool_heldout.py ../shared/data --configs original:points+prior clicks:points+prior \
        clicks:box+points+prior --max-clicks 10 --json runs/tool_heldout.json

Same split by image as `ibisagent train tool` (15% held out); embeddings from its disk cache.
`+ok` / `-ok`: share of positive / negative clicks the mask honours at the clicked pixel.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def n_components(sample) -> int:
    """Connected regions (8-connectivity) of a sample's reference mask; 0 when unreadable."""
    import cv2
    import numpy as np

    try:
        _, mask = sample.load()
    except Exception:
        return 0
    return cv2.connectedComponents(np.asarray(mask, np.uint8))[0] - 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--configs", nargs="+", default=["original:points+prior", "clicks:points+prior"])
    ap.add_argument("--max-clicks", type=int, default=10)
    ap.add_argument("--heldout", type=int, default=15)
    from ibisagent.train import DEFAULT_CACHE_DIR

    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--components",
        choices=["all", "single", "multi"],
        default="all",
        help="only targets whose reference mask is one connected region (single) or several (multi)",
    )
    args = ap.parse_args()

    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.splits import split_by_image
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train.embedding_cache import cached_embeddings
    from ibisagent.train.tool_eval import evaluate_tool
    from ibisagent.train.tool_pipeline import format_share

    _, held = split_by_image(collect_pairs(args.data), args.heldout)
    if args.components != "all":
        held = [s for s in held if (n_components(s) == 1) == (args.components == "single")]
    emb_files = cached_embeddings(held, args.cache_dir)
    print(
        f"{len(held)} held-out pairs ({len(emb_files)} images with cached embeddings), up to {args.max_clicks} oracle clicks"
    )
    print(
        f"{'weights:strategy':<28}{'IoU@1':>7}{'IoU@3':>7}{'IoU@5':>7}{'IoU@10':>7}{'NoC80':>7}{'NoC85':>7}{'NoC90':>7}{'box':>7}{'+ok':>6}{'-ok':>6}"
    )
    results = {}
    for cfg in args.configs:
        weights, _, strategy = cfg.partition(":")
        tool = LiteMedSAMTool(weights=weights, strategy=strategy or "points+prior", cache_entries=4)
        s = evaluate_tool(tool, held, emb_files, args.max_clicks)
        m, n, h = s["mean_iou_at"], s["noc"], s["clicks_honoured"]
        print(
            f"{cfg:<28}{m['1']:7.3f}{m['3']:7.3f}{m['5']:7.3f}{m['10']:7.3f}{n['80']:7.2f}{n['85']:7.2f}{n['90']:7.2f}{s['box_iou']:7.3f}{format_share(h['positive']):>6}{format_share(h['negative']):>6}",
            flush=True,
        )
        results[cfg] = s
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

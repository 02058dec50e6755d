"""`ibisagent teach` on CPU (issue target: under 5 minutes on 2 cores for 5 image/mask pairs).

    python bench/bench_teach.py [--threads 2] [--finetune]

Teaches the shipped compact policy a new structure from 5 bundled demo pairs (named "zebra organ",
so nothing of it is known before), with a cold embedding cache, as a user's first `ibisagent teach`
meets it. Prints the seconds spent embedding the images, fitting (the exemplar probe and the presence
head), and in all. `--finetune` also times the earlier recipe (`TeachConfig.finetune_belief`,
the belief net's text-conditioned layers fine-tuned for its default 300 steps) on the same pairs,
with the ratio.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--finetune", action="store_true", help="also time the earlier fine-tuning recipe")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train.compact.teach import TeachConfig, teach
    from ibisagent.train.embedding_cache import embed_images

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = list(csv.DictReader((DEMO / "pairs.csv").open()))[:5]
        (root / "pairs.csv").write_text(
            "image,mask,structure\n" + "".join(f"{DEMO / r['image']},{DEMO / r['mask']},zebra organ\n" for r in rows)
        )
        samples = collect_pairs([root])
        t0 = time.perf_counter()
        tool = LiteMedSAMTool(weights="original")
        emb = embed_images(tool, sorted({s.image for s in samples}), root / "cache")
        t_embed = time.perf_counter() - t0
        t1 = time.perf_counter()
        card = teach(samples, emb, root / "taught", cfg=TeachConfig(), log=lambda *a: None)
        t_teach = time.perf_counter() - t1
        print(f"teach, 5 pairs ({len(emb)} images), {args.threads} threads:")
        print(f"  embedding {t_embed:.1f} s (cold cache), fitting {t_teach:.1f} s ({card['steps']} presence steps)")
        print(f"  total {t_embed + t_teach:.1f} s ({(t_embed + t_teach) / 60:.2f} min; target < 5 min)")
        if args.finetune:
            t2 = time.perf_counter()
            old = teach(samples, emb, root / "old", cfg=TeachConfig(finetune_belief=True), log=lambda *a: None)
            t_old = time.perf_counter() - t2
            print(
                f"  earlier recipe (fine-tuning, {old['steps']} steps): fitting {t_old:.1f} s, "
                f"{t_old / t_teach:.1f}x the exemplar probe's"
            )


if __name__ == "__main__":
    main()

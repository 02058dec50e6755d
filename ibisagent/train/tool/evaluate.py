"""Measure a LiteMedSAM prompt path on held-out pairs: oracle-click curves and GT-box IoU.

Embeddings come from the on-disk training cache, so evaluating several weights or strategies
never re-runs the encoder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ibisagent.data.pairs import Sample
from ibisagent.env.env import IbisEnv
from ibisagent.eval.interactive import simulate_sample, summarize_rows
from ibisagent.metrics import iou
from ibisagent.tools.base import Embedding, image_key


def prime_cache(tool, image: np.ndarray, emb_file: Path) -> None:
    """Put a disk-cached embedding of `image` into the tool's in-memory cache."""
    from ibisagent.train.embedding_cache import load_embedding

    e = load_embedding(emb_file)
    tool.cache.put(
        Embedding(
            key=image_key(image),
            features=e["features"].float()[None],
            original_size=tuple(e["original_size"]),
            input_size=tuple(e["input_size"]),
        )
    )


def gt_box(mask: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) pixels of the mask's bounding box."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def evaluate_tool(
    tool, samples: list[Sample], emb_files: dict, max_clicks: int = 20, progress: Callable | None = None
) -> dict:
    """Oracle-click summary (IoU after k clicks, NoC, per modality) plus mean GT-box IoU."""
    from ibisagent.io.images import load_image

    env = IbisEnv(tool, max_steps=max_clicks)
    rows, box_ious = [], []
    by_image: dict[Path, list[Sample]] = defaultdict(list)
    for s in samples:
        by_image[s.image].append(s)
    for image_path, group in by_image.items():
        ef = emb_files.get(image_path)
        image = None
        if isinstance(ef, Path):
            image = load_image(image_path)
            prime_cache(tool, image, ef)
        for s in group:
            row = simulate_sample(env, s, max_clicks)
            rows.append(row)
            if not row.get("error") and image is not None:
                _, gt = s.load()
                box_ious.append(iou(tool.predict(image, box=gt_box(gt)).mask, gt))
            if progress:
                progress()
    summary = summarize_rows(rows, max_clicks)
    summary["box_iou"] = float(np.mean(box_ious)) if box_ious else float("nan")
    summary["timings"] = tool.timings.snapshot()
    return summary

"""The held-out split of `train compact` / `train tool`, re-runnable for any weights
(`ibisagent eval heldout compact|tool`): the same split by image (15% of the images held out),
embeddings from the training commands' disk cache.

Held-out images come from the sources the policy trained on; for data from sources it never
saw, see `train.leave_source_out` (`ibisagent eval lso`).
"""

from __future__ import annotations

import time
from pathlib import Path

from ibisagent.errors import IbisInputError


def heldout_samples(
    data, heldout: int = 15, split: str = "heldout", val: int = 10, cache_dir: Path | None = None, embed: bool = False
):
    """-> (samples of the split, image path -> cached embedding file for those already embedded).
    split "heldout": the split `train compact` reports; "val": the validation images after them
    (`data.splits.validation_split`; training images of the full run). `embed`: embed the
    split's images missing from the cache first (as `train compact` would)."""
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.splits import split_by_image, validation_split
    from ibisagent.train import DEFAULT_CACHE_DIR
    from ibisagent.train.embedding_cache import cached_embeddings

    if split not in ("heldout", "val"):
        raise IbisInputError("--split", f"expected heldout or val, got {split!r}")
    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    train, held = split_by_image(collect_pairs(list(data)), heldout)
    if split == "val":
        _, held = validation_split(train, heldout, val)
    if embed:
        from ibisagent.tools.litemedsam import LiteMedSAMTool
        from ibisagent.train.embedding_cache import embed_images

        embed_images(LiteMedSAMTool(weights="original"), sorted({s.image for s in held}), cache_dir)
    return held, cached_embeddings(held, cache_dir)


def reference_belief_policy(weights: str | None, kwargs: dict):
    """The compact policy with the episode's reference mask as its belief (logits +-10, present):
    what its click rule and the tool reach when the belief is right."""
    import numpy as np

    from ibisagent.policies.compact import Belief, CompactPolicy

    class ReferenceBelief(CompactPolicy):
        def begin(self, query: str, gt_mask=None) -> None:
            super().begin(query, gt_mask)
            self.reference = Belief(np.where(gt_mask, 10.0, -10.0).astype(np.float32), 1.0)

        def belief(self, image, query, structure=None):
            return self.reference

    return ReferenceBelief(weights, **kwargs)


def heldout_compact(
    held,
    emb_files,
    weights: list[str],
    max_steps: int = 20,
    present: bool = True,
    absent: bool = True,
    policy_kwargs: dict | None = None,
    reference_belief: bool = False,
):
    """Yield one dict per weights file (episodes from the query alone on present targets: mean IoU,
    per category / modality / target; absent-target questions and out-of-domain queries), then one
    per further file: its paired difference to the first (`train.compact.sft.paired_stages`)."""
    from ibisagent.train.compact.sft import evaluate_absent, evaluate_compact, evaluate_unknown_queries, paired_stages

    kwargs = policy_kwargs or {}
    results = []
    for w in weights:
        spec = f"compact:{w}"
        out = {"weights": w}
        if present:
            policy = reference_belief_policy(w, kwargs) if reference_belief else spec
            res = evaluate_compact(policy, held, emb_files, max_steps, policy_kwargs=kwargs)
            results.append((w, res))
            keep = ("n", "mean_iou", "mean_steps", "no_click", "called_absent", "no_mask")
            out |= {k: res[k] for k in keep + ("per_category", "per_modality", "per_target")}
        if absent:
            out["absent"] = evaluate_absent(spec, held, emb_files, max_steps)
            out["unknown_queries"] = evaluate_unknown_queries(spec, held, emb_files)
        yield out
    for w, res in results[1:]:
        yield {"paired": f"{w} - {results[0][0]}"} | paired_stages(results[0][1], res)


def n_components(sample) -> int:
    """Connected regions (8-connectivity) of a sample's reference mask; 0 when unreadable."""
    import cv2
    import numpy as np

    try:
        _, mask = sample.load()
    except IbisInputError:
        return 0
    return cv2.connectedComponents(np.asarray(mask, np.uint8))[0] - 1


def heldout_tool(held, emb_files, configs: list[str], max_clicks: int = 10, components: str = "all"):
    """Yield (config, summary) per "weights:strategy" config: the reference click simulator's
    IoU after k clicks, NoC, GT-box IoU and the share of clicks honoured (`train.tool.evaluate`).
    `components`: only targets whose mask is one region ("single") or several ("multi")."""
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train.tool.evaluate import evaluate_tool

    if components not in ("all", "single", "multi"):
        raise IbisInputError("--components", f"expected all, single or multi, got {components!r}")
    if components != "all":
        held = [s for s in held if (n_components(s) == 1) == (components == "single")]
    for cfg in configs:
        weights, _, strategy = cfg.partition(":")
        tool = LiteMedSAMTool(weights=weights, strategy=strategy or "points+prior", cache_entries=4)
        t0 = time.perf_counter()
        summary = evaluate_tool(tool, held, emb_files, max_clicks)
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        yield cfg, summary

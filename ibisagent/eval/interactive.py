"""Oracle-click episodes over image/mask pairs: the interactive-segmentation protocol.

Used by `ibisagent simulate`, `bench/` and the evaluation harness alike.
"""

from __future__ import annotations

import time
from pathlib import Path

from ibisagent.data.pairs import Sample
from ibisagent.env.env import IbisEnv
from ibisagent.errors import IbisInputError
from ibisagent.io.rle import rle_decode
from ibisagent.metrics import NOC_THRESHOLDS, click_honoured, honoured_shares, mask_scores, noc, summarize_curves
from ibisagent.policies.oracle import OraclePolicy
from ibisagent.policies.runner import run_episode


def simulate_sample(
    env: IbisEnv, sample: Sample, max_clicks: int = 20, iou_stop: float = 1.0, overlay_path: Path | None = None
) -> dict:
    """One oracle episode on `sample`; returns a JSON-ready row. A sample that cannot be read
    gives a row with `error` set instead of raising."""
    row = {
        "id": sample.id,
        "image": str(sample.image),
        "mask": str(sample.mask),
        "structure": sample.structure,
        "modality": sample.modality,
        "origin": sample.origin,
    }
    try:
        image, gt = sample.load()
    except IbisInputError as exc:
        return {**row, "error": str(exc)}
    if gt is None or not gt.any():
        return {**row, "error": f"{sample.mask}: reference mask is empty"}
    env.max_steps = max_clicks
    t0 = time.perf_counter()
    enc0, dec0 = env.tool.timings.encoder_s, env.tool.timings.decoder_s
    ep = run_episode(
        env,
        OraclePolicy(iou_threshold=iou_stop),
        image,
        f"Segment the {sample.structure}.",
        gt,
        image_name=str(sample.image),
    )
    curve = ep.iou_curve
    final = ep.final_mask
    # One flag per click, aligned with `clicks`; a click whose step left no mask honours nothing.
    clicked = [s for s in ep.steps if s.click is not None]
    row.update(
        ious=[round(v, 4) for v in curve],
        clicks=[list(s.click) for s in clicked],
        honoured=[s.mask is not None and click_honoured(rle_decode(s.mask), s.click) for s in clicked],
        stop_reason=ep.stop_reason,
        **{f"noc{round(t * 100)}": noc(curve, t, max_clicks) for t in NOC_THRESHOLDS},
        **{k: round(v, 4) for k, v in mask_scores(final, gt).items()},
        seconds=round(time.perf_counter() - t0, 3),
        encoder_s=round(env.tool.timings.encoder_s - enc0, 4),
        decoder_s=round(env.tool.timings.decoder_s - dec0, 4),
    )
    if overlay_path is not None:
        from ibisagent.io.images import save_png
        from ibisagent.overlay import render_overlay

        save_png(overlay_path, render_overlay(image, final, clicks=ep.clicks, contour=True))
    return row


def summarize_rows(rows: list[dict], max_clicks: int = 20) -> dict:
    """`{"n", "mean_iou_at": {"1",..}, "noc": {"80",..}, "errors", "per_modality": {...}}`."""
    ok = [r for r in rows if not r.get("error")]
    out = summarize_curves([r["ious"] for r in ok], max_clicks=max_clicks)
    out["errors"] = len(rows) - len(ok)
    out["clicks_honoured"] = honoured_shares(ok)
    per: dict[str, list] = {}
    for r in ok:
        per.setdefault(r["modality"], []).append(r["ious"])
    out["per_modality"] = {m: summarize_curves(c, max_clicks=max_clicks) for m, c in sorted(per.items())}
    return out

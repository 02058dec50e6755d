"""Experiment (docs/experiments.md, "Segmentation tool"): the tool's update rules under the reference
click simulator, on sources the shipped tool never trained on.

The shipped click-trained tool was trained on an earlier collection; the sources of ../shared/data
whose modality appears nowhere in its report (`ibisagent/tools/weights/report.json`, per modality)
were added after it, so for the tool they are left-out sources. Each pair is run once per tool
setting (`--variants`, e.g. the update rule `LiteMedSAMTool.update`), the image embedded once; per
setting: IoU@k, NoC, the sources where 10 clicks end below 1, and paired differences against the
first setting with bootstrap intervals.

    python scripts/experiments/tool_update.py DATA --per-source 10 --out runs/tool_update

About 1 s per pair and rule on 2 cores (OpenVINO encoder).

The setting `instances=true` (dropped, kept here to rerun it) copies the first positive click's
mask to every part of the image that looks like it, for targets of many instances (nuclei, cells,
glomeruli): the embedding's cells are scored by cosine similarity to the exemplar's mean feature;
cells above the midpoint between the exemplar's mean similarity and the background's form candidate
regions; each region's most similar cell gets a positive click decoded alone (batched), and
instances of plausible size are added. Multi-instance sources:

    python scripts/experiments/tool_update.py DATA --sources all --per-source 10 --out runs/tool_instances \
        --source monuseg2018_nuclei --source neurips22_cellseg_dic --source aidpath_kidney_glomeruli \
        --source lizard_colon_nuclei --source monusac2020_nuclei --source deepcell_dynamicnuclearnet \
        --source blood_cell_smear_rbc --variants update=global update=local update=local,instances=true

The setting `adapt=W` (dropped, kept here to rerun it) is test-time adaptation of the decoder: from
the second click on, its mask readout is fitted to the clicks so far, anchored to its own answer on
2,000 cells of the image, W weighing the distance from the decoder's readout (`AdaptingTool`):

    python scripts/experiments/tool_update.py DATA --per-source 10 --variants update=global adapt=1.0
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibisagent.tools.litemedsam import LiteMedSAMTool


def unseen_sources(samples) -> set[str]:
    """Sources none of whose modalities the shipped tool's report lists: added after its training."""
    from ibisagent.train.leave_source_out import source_of

    report = Path(__file__).resolve().parents[2] / "ibisagent/tools/weights/report.json"
    trained = set(json.loads(report.read_text())["results"]["clicks"]["per_modality"])
    by_source = defaultdict(set)
    for s in samples:
        by_source[source_of(s)].add(s.modality)
    return {src for src, mods in by_source.items() if not mods & trained}


MAX_INSTANCES = 48  # decoded candidates at most (the largest regions first)


def candidate_clicks(features: np.ndarray, exemplar: np.ndarray, valid: tuple[int, int]) -> np.ndarray:
    """K x 2 (x, y) low-res-grid clicks at the most exemplar-like cell of each candidate region
    outside the exemplar (H x W bool, low-res grid); `features` C x h x w (256 x 64 x 64)."""
    import cv2

    C, gh, gw = features.shape
    scale = exemplar.shape[0] // gh
    vh, vw = -(-valid[0] // scale), -(-valid[1] // scale)
    cells = (cv2.resize(exemplar.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA) >= 0.5)[:vh, :vw]
    if not cells.any():
        return np.zeros((0, 2), np.float32)
    f = features[:, :vh, :vw].reshape(C, -1)
    f = f / (np.linalg.norm(f, axis=0, keepdims=True) + 1e-6)
    proto = f[:, cells.reshape(-1)].mean(1)
    sim = (proto / (np.linalg.norm(proto) + 1e-6) @ f).reshape(vh, vw)
    near = cv2.dilate(cells.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if near.all():
        return np.zeros((0, 2), np.float32)
    threshold = 0.5 * (sim[cells].mean() + sim[~near].mean())
    n, labels, stats, _ = cv2.connectedComponentsWithStats(((sim > threshold) & ~near).astype(np.uint8))
    clicks = []
    for i in sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])[:MAX_INSTANCES]:
        r, c = np.unravel_index(int(np.argmax(np.where(labels == i, sim, -np.inf))), sim.shape)
        clicks.append(((c + 0.5) * scale, (r + 0.5) * scale))
    return np.asarray(clicks, np.float32).reshape(-1, 2)


def add_instances(
    exemplar_logits: np.ndarray,
    features: np.ndarray,
    valid: tuple[int, int],
    decode_clicks: Callable[[np.ndarray], np.ndarray],
    size_range: tuple[float, float] = (0.2, 5.0),
) -> np.ndarray:
    """The exemplar's logits (H x W) with each look-alike instance added (elementwise max) when it
    holds its own click and its area is within `size_range` x the exemplar's.
    `decode_clicks(clicks K x 2)`: K x H x W logits, the tool's answer to each click alone."""
    exemplar = exemplar_logits > 0
    area = int(exemplar[: valid[0], : valid[1]].sum())
    clicks = candidate_clicks(features, exemplar, valid)
    out = exemplar_logits.astype(np.float32, copy=True)
    if area == 0 or len(clicks) == 0:
        return out
    for (x, y), inst in zip(clicks, decode_clicks(clicks)):
        size = int((inst[: valid[0], : valid[1]] > 0).sum())
        if inst[int(y), int(x)] > 0 and size_range[0] * area <= size <= size_range[1] * area:
            np.maximum(out, inst, out=out)
    return out


@dataclass
class InstancesTool(LiteMedSAMTool):
    """LiteMedSAMTool that, with `instances`, adds the look-alike instances to a first lone positive click."""

    instances: bool = False

    def _decode(self, emb, points, labels, prev_logits, box):
        import torch

        from ibisagent.tools.base import ToolResult
        from ibisagent.tools.litemedsam_model import decode, logits_to_mask

        out = super()._decode(emb, points, labels, prev_logits, box)
        if not (self.instances and prev_logits is None and box is None and labels.tolist() == [1]):
            return out

        def decode_clicks(clicks):
            pts = torch.from_numpy(clicks)[:, None, :]
            with torch.inference_mode():
                low, _ = decode(self.net, emb.features, pts, torch.ones((len(clicks), 1), dtype=torch.int64))
            return low[:, 0].float().numpy()

        feats = emb.features[0].float().numpy()
        merged = add_instances(out.logits[0, 0].float().numpy(), feats, emb.input_size, decode_clicks)
        logits = torch.from_numpy(merged)[None, None]
        return ToolResult(logits_to_mask(logits, emb.input_size, emb.original_size), logits, out.score)


@dataclass
class AdaptingTool(InstancesTool):
    """With `adapt` > 0, from the second click on the decoder's mask readout (the 32-d hypernetwork
    vector h and a bias b, logits = h . u(x) + b over the upscaled features u) is fitted to the clicks
    so far: BCE on 5 x 5 low-res cells around each click, plus `adapt` x |h - h0|^2 / |h0|^2."""

    adapt: float = 0.0

    def _decode(self, emb, points, labels, prev_logits, box):
        import torch

        from ibisagent.tools.base import ToolResult
        from ibisagent.tools.litemedsam_model import decode, logits_to_mask, to_model_coords

        if not (self.adapt > 0 and len(points) >= 2 and box is None and prev_logits is not None):
            return super()._decode(emb, points, labels, prev_logits, box)
        md, seen = self.net.mask_decoder, {}
        hooks = [
            md.output_upscaling.register_forward_hook(lambda m, i, o: seen.__setitem__("u", o)),
            md.output_hypernetworks_mlps[0].register_forward_hook(lambda m, i, o: seen.__setitem__("h", o)),
        ]
        try:
            pts = torch.from_numpy(to_model_coords(points, emb.original_size))[None]
            lab = torch.from_numpy(labels.astype(np.int64))[None]
            with torch.inference_mode():
                low, iou = decode(self.net, emb.features, pts, lab, prev_logits.reshape(1, 1, 256, 256).float())
        finally:
            for h in hooks:
                h.remove()
        u, h0 = seen["u"][0].clone(), seen["h"][0].clone()  # 32 x 256 x 256, 32
        rows, cols, ys = [], [], []
        for (x, y), lbl in zip(pts[0].tolist(), labels.tolist()):
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    r, c = int(round(y)) + dy, int(round(x)) + dx
                    if 0 <= r < 256 and 0 <= c < 256:
                        rows.append(r), cols.append(c), ys.append(float(lbl))
        feats = u[:, rows, cols].T  # n x 32
        target = torch.tensor(ys)
        pos = target.mean().clamp(1e-3, 1 - 1e-3)
        weight = torch.where(target > 0, 0.5 / pos, 0.5 / (1 - pos))
        # Anchors: 2,000 cells of the image, soft targets from the decoder's own new answer, so the
        # readout honours the clicks while staying near the decoder's mask elsewhere.
        gen = torch.Generator().manual_seed(0)
        h_in, w_in = emb.input_size
        ar = torch.randint(0, h_in, (2000,), generator=gen)
        ac = torch.randint(0, w_in, (2000,), generator=gen)
        feats = torch.cat([feats, u[:, ar, ac].T])
        target = torch.cat([target, torch.sigmoid(low[0, 0, ar, ac].float())])
        weight = torch.cat([weight, torch.full((2000,), 1.0)])
        delta = torch.zeros(32, requires_grad=True)
        bias = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([delta, bias], max_iter=25, line_search_fn="strong_wolfe")
        scale = float((h0 * h0).sum())

        def closure():
            opt.zero_grad()
            z = feats @ (h0 + delta) + bias
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, target, weight=weight)
            loss = loss + self.adapt * (delta * delta).sum() / scale
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        with torch.no_grad():
            logits = (torch.einsum("c,chw->hw", h0 + delta, u) + bias)[None, None]
        return ToolResult(logits_to_mask(logits, emb.input_size, emb.original_size), logits, float(iou[0, 0]))


def settings(variant: str) -> dict:
    """Variant text to tool fields: "update=local,instances=true" -> {"update": "local", "instances": True}."""
    pairs = dict(part.split("=", 1) for part in variant.split(","))
    return {k: {"true": True, "false": False}.get(v, float(v) if k == "adapt" else v) for k, v in pairs.items()}


def main() -> None:
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.env.env import IbisEnv
    from ibisagent.eval.interactive import simulate_sample
    from ibisagent.eval.stats import bootstrap_ci, paired_difference
    from ibisagent.io.jsonl import JsonlAppender, read_jsonl
    from ibisagent.metrics import iou, iou_at, noc, summarize_curves
    from ibisagent.progress import progress_bar
    from ibisagent.train.leave_source_out import per_source, source_of
    from ibisagent.train.tool.evaluate import gt_box

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, nargs="+")
    ap.add_argument("--per-source", type=int, default=10, help="pairs per source (0: all)")
    ap.add_argument("--max-clicks", type=int, default=10)
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["update=global", "update=local", "update=local:keep", "update=parts"],
        help="tool settings to compare, each FIELD=VALUE[,FIELD=VALUE] of LiteMedSAMTool; the first is the baseline",
    )
    ap.add_argument("--sources", choices=("unseen", "all"), default="unseen")
    ap.add_argument("--source", action="append", default=[], help="only this source (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("runs/tool_update"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--box", action="store_true", help="also the tool prompted with the reference mask's box")
    args = ap.parse_args()

    samples = collect_pairs(args.data)
    if args.sources == "unseen":
        keep = unseen_sources(samples)
        samples = [s for s in samples if source_of(s) in keep]
    if args.source:
        samples = [s for s in samples if source_of(s) in set(args.source)]
    samples = per_source(samples, args.per_source, args.seed)
    tool = AdaptingTool()
    env = IbisEnv(tool, max_steps=args.max_clicks)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.jsonl"
    done = {(r["id"], r["variant"]) for r in read_jsonl(path)}
    defaults = {f: getattr(tool, f) for v in args.variants for f in settings(v)}
    writer = JsonlAppender(path)
    box_path = args.out / "box.jsonl"
    box_done = {r["id"] for r in read_jsonl(box_path)}
    box_writer = JsonlAppender(box_path)
    with progress_bar() as bar:
        task = bar.add_task("pairs", total=len(samples))
        for s in samples:
            for variant in args.variants:
                if (s.id, variant) not in done:
                    for field, value in settings(variant).items():
                        setattr(tool, field, value)
                    row = simulate_sample(env, s, args.max_clicks)
                    writer.write({**row, "variant": variant, "source": source_of(s)})
                    for field, value in defaults.items():
                        setattr(tool, field, value)
            if args.box and s.id not in box_done:
                image, gt = s.load()
                box_iou = iou(tool.predict(image, box=gt_box(gt)).mask, gt) if gt.any() else None
                box_writer.write({"id": s.id, "source": source_of(s), "box_iou": box_iou})
            bar.advance(task)
    writer.close()
    box_writer.close()

    rows = [r for r in read_jsonl(path) if not r.get("error") and r["variant"] in args.variants]
    by = {u: {r["id"]: r for r in rows if r["variant"] == u} for u in args.variants}
    ids = sorted(set.intersection(*(set(v) for v in by.values())))
    k_max = args.max_clicks
    summary = {"pairs": len(ids), "sources": len({by[args.variants[0]][i]["source"] for i in ids}), "variants": {}}
    for u in args.variants:
        curves = [by[u][i]["ious"] for i in ids]
        s = summarize_curves(curves, ks=(1, 3, 5, 10), max_clicks=k_max)
        s["iou10_ci"] = bootstrap_ci([iou_at(c, 10) for c in curves])
        per_src = defaultdict(list)
        for i in ids:
            per_src[by[u][i]["source"]].append(by[u][i]["ious"])
        s["per_source"] = {
            src: summarize_curves(cs, ks=(1, 5, 10), max_clicks=k_max) for src, cs in sorted(per_src.items())
        }
        at = {src: v["mean_iou_at"] for src, v in s["per_source"].items()}
        s["sources_worse_at_10"] = sorted(src for src, v in at.items() if v["10"] < v["1"])
        if u != args.variants[0]:
            base = [by[args.variants[0]][i]["ious"] for i in ids]
            for k in (5, 10):
                s[f"vs_{args.variants[0]}_iou{k}"] = paired_difference(
                    [iou_at(c, k) for c in base], [iou_at(c, k) for c in curves]
                )
            s[f"vs_{args.variants[0]}_noc85"] = paired_difference(
                [noc(c, 0.85, k_max) for c in base], [noc(c, 0.85, k_max) for c in curves]
            )
        summary["variants"][u] = s
    boxes = {r["id"]: r["box_iou"] for r in read_jsonl(box_path) if r["box_iou"] is not None}
    if args.box and set(ids) <= set(boxes):
        values = [boxes[i] for i in ids]
        per_src = defaultdict(list)
        for i in ids:
            per_src[by[args.variants[0]][i]["source"]].append(boxes[i])
        summary["box_iou"] = {
            "mean": float(np.mean(values)),
            "ci": bootstrap_ci(values),
            "per_source": {src: float(np.mean(v)) for src, v in sorted(per_src.items())},
        }
        print(
            f"reference box prompt: IoU {np.mean(values):.3f} [{summary['box_iou']['ci'][0]:.3f}, "
            f"{summary['box_iou']['ci'][1]:.3f}]"
        )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("per source: n, IoU@1 / 5 / 10 of each setting")
    for src, v in summary["variants"][args.variants[0]]["per_source"].items():
        cells = [summary["variants"][u]["per_source"][src]["mean_iou_at"] for u in args.variants]
        print(f"  {src:38s} {v['n']:3d}  " + "  ".join(f"{c['1']:.3f} {c['5']:.3f} {c['10']:.3f}" for c in cells))
    for u, s in summary["variants"].items():
        ious = " ".join(f"IoU@{k} {v:.3f}" for k, v in s["mean_iou_at"].items())
        print(f"{u:24s} n={s['n']} {ious} NoC@85 {s['noc']['85']:.2f} worse-at-10: {len(s['sources_worse_at_10'])}")
        for key in (f"vs_{args.variants[0]}_iou5", f"vs_{args.variants[0]}_iou10", f"vs_{args.variants[0]}_noc85"):
            if key in s:
                d = s[key]
                print(f"    {key}: {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")


if __name__ == "__main__":
    main()

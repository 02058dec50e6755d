"""`ibisagent click`: a person's clicks to a mask (interactive segmentation)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import StrategyOpt, ToolOpt, UpdateOpt, make_tool_from_opts, run_guarded
from ibisagent.errors import IbisInputError
from ibisagent.geometry import to_pixels

app = typer.Typer()


def parse_point(text: str) -> tuple[float, float]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2:
        raise IbisInputError(text, "a click is X,Y (e.g. 0.41,0.55 normalised or 212,300 pixels)")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise IbisInputError(text, "click coordinates must be numbers") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise IbisInputError(text, "click coordinates must be finite numbers")
    return x, y


def output_paths(image_path: Path, out: Path | None, overlay: Path | None) -> tuple[Path, Path]:
    """Mask and overlay paths: runs/click/NAME_mask.png and NAME_overlay.png by default; the
    overlay goes beside --out when only --out is given (never into the input's folder unasked)."""
    stem = image_path.stem
    out = out or Path("runs") / "click" / f"{stem}_mask.png"
    overlay = overlay or out.with_name(f"{out.stem.removesuffix('_mask')}_overlay.png")
    return out, overlay


@app.command()
def click(
    image: Annotated[Path, typer.Argument(help="Image file (PNG/JPG/TIFF/BMP, 8/16-bit, grey/RGB/RGBA)")],
    pos: Annotated[list[str] | None, typer.Option("--pos", help="Positive click X,Y (repeatable)")] = None,
    neg: Annotated[list[str] | None, typer.Option("--neg", help="Negative click X,Y (repeatable)")] = None,
    mask: Annotated[Path | None, typer.Option(help="Previous mask PNG to refine (used as the spatial prior)")] = None,
    coords: Annotated[str, typer.Option(help="auto (all values in [0,1] = normalised), norm, or px")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Mask PNG to write (default runs/click/NAME_mask.png)")] = None,
    overlay: Annotated[
        Path | None, typer.Option(help="Overlay PNG to write (default: beside the mask, NAME_overlay.png)")
    ] = None,
    tool: ToolOpt = "litemedsam",
    strategy: StrategyOpt = "points+prior",
    update: UpdateOpt = "global",
) -> None:
    """Turn clicks into a mask with the segmentation tool.

    Example: ibisagent click scan.png --pos 0.52,0.40 --pos 0.55,0.48 --neg 0.70,0.40

    Correct a mask with one click that changes only what it touches (the last click is the newest):
    ibisagent click scan.png --mask scan_mask.png --neg 0.70,0.40 --update local

    Nothing is written into the image's folder unless --out / --overlay say so.
    """
    run_guarded(_click, image, pos or [], neg or [], mask, coords, out, overlay, tool, strategy, update)


def _click(image_path, pos, neg, mask_path, coords, out, overlay, tool, strategy, update):
    import numpy as np

    from ibisagent.io.images import load_image, load_mask, save_mask_png, save_png
    from ibisagent.overlay import render_overlay

    if coords not in ("auto", "norm", "px"):
        raise IbisInputError(coords, "--coords must be auto, norm or px")
    if not pos and not neg and mask_path is None:
        raise IbisInputError(image_path, "give at least one --pos or --neg click")
    pts = [parse_point(p) for p in pos] + [parse_point(p) for p in neg]
    img = load_image(image_path)
    H, W = img.shape[:2]
    px = to_pixels(pts, W, H, coords)
    labels = [1] * len(pos) + [0] * len(neg)
    prior_mask = load_mask(mask_path, shape=(H, W)) if mask_path else None
    seg_tool = make_tool_from_opts(tool, strategy, update)
    emb = seg_tool.embed(img)
    prev = seg_tool.mask_to_logits(emb, prior_mask) if prior_mask is not None and prior_mask.any() else None
    if px:
        result = seg_tool.predict(emb, np.array(px, np.float32), np.array(labels), prev)
        new_mask, score = result.mask, result.score
    else:
        new_mask, score = prior_mask, float("nan")
    out, overlay = output_paths(image_path, out, overlay)
    save_mask_png(out, new_mask)
    save_png(
        overlay, render_overlay(img, new_mask, clicks=[(x, y, lab) for (x, y), lab in zip(px, labels)], contour=True)
    )
    typer.echo(
        f"mask: {out} ({int(new_mask.sum())} pixels, {100 * new_mask.mean():.1f}% of the image, tool score {score:.2f})"
    )
    typer.echo(f"overlay: {overlay}")

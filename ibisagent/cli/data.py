"""`ibisagent data`: look at datasets, make queries, export for training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import AxisOpt, WindowOpt, run_guarded
from ibisagent.errors import IbisInputError

app = typer.Typer(
    name="data", help="Datasets: inspect, make queries, export to Hugging Face datasets.", no_args_is_help=True
)

PathArg = Annotated[
    str,
    typer.Argument(
        help="pairs.csv folder, BiomedParse folder, .jsonl manifest, NIfTI/DICOM volume, nilearn:mni152, "
        "or a folder of these"
    ),
]
LabelsOpt = Annotated[list[Path] | None, typer.Option("--labels", help="Volume label map (NIfTI); repeatable")]
NamesOpt = Annotated[
    list[str] | None, typer.Option("--names", help="Label names per --labels: 1=liver,2=kidney or a .json/.txt")
]
NegOpt = Annotated[bool, typer.Option(help="Keep volume slices without the target as negatives")]
StepOpt = Annotated[int, typer.Option(min=1, help="Every STEP-th volume slice")]
ModalityOpt = Annotated[str | None, typer.Option(help="Volume modality (CT, MRI...) when the file does not say")]
SeriesOpt = Annotated[str | None, typer.Option("--series", help="DICOM SeriesInstanceUID when a folder mixes series")]


def _open(path, labels, names, axis, window, negatives, step, modality, series):
    from ibisagent.data.sources import VolumeOptions, open_dataset
    from ibisagent.data.volumes import parse_label_names
    from ibisagent.data.windowing import WINDOW_CHOICES

    labels, names = labels or [], names or []
    if len(labels) != len(names):
        raise IbisInputError("--labels/--names", f"give one --names per --labels ({len(labels)} vs {len(names)})")
    if window not in WINDOW_CHOICES:
        raise IbisInputError(window, f"--window must be one of {', '.join(WINDOW_CHOICES)}")
    maps = [(p, parse_label_names(n)) for p, n in zip(labels, names)]
    opts = VolumeOptions(maps, axis, window, negatives, step, modality, series)
    return open_dataset(path, opts)


def _print_skipped(report, limit: int = 20) -> None:
    if report.skipped:
        typer.echo(f"skipped {len(report.skipped)}:", err=True)
        for s in report.skipped[:limit]:
            typer.echo(f"  {s}", err=True)
        if len(report.skipped) > limit:
            typer.echo(f"  ... and {len(report.skipped) - limit} more", err=True)


@app.command()
def inspect(
    path: PathArg,
    sheet: Annotated[Path | None, typer.Option(help="Contact-sheet PNG (default: runs/inspect_sheet.png)")] = None,
    n: Annotated[int, typer.Option(min=1, max=400, help="Samples on the contact sheet")] = 24,
    check: Annotated[bool, typer.Option(help="Open every sample (sizes, binary, non-empty masks)")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write counts and skips as JSON")] = None,
    labels: LabelsOpt = None,
    names: NamesOpt = None,
    axis: AxisOpt = "axial",
    window: WindowOpt = "auto",
    negatives: NegOpt = False,
    step: StepOpt = 1,
    modality: ModalityOpt = None,
    series: SeriesOpt = None,
) -> None:
    """Count samples per modality and target, report what was skipped and why, and write a
    contact sheet of samples with their masks drawn.

    Example: ibisagent data inspect ibisagent/assets/demo --sheet runs/sheet.png
    """
    run_guarded(
        _inspect, path, sheet, n, check, json_out, labels, names, axis, window, negatives, step, modality, series
    )


def _inspect(path, sheet, n, check, json_out, labels, names, axis, window, negatives, step, modality, series):
    from collections import Counter

    from ibisagent.data.contact_sheet import contact_sheet
    from ibisagent.data.modality import canonical_modality
    from ibisagent.data.report import check_samples
    from ibisagent.io.images import atomic_write_bytes, save_png

    report = _open(path, labels, names, axis, window, negatives, step, modality, series)
    if check:
        checked = check_samples(report.samples)
        report.samples, report.skipped = checked.samples, report.skipped + checked.skipped
    samples = report.samples
    by_mod = Counter(canonical_modality(s.modality) for s in samples)
    by_target = Counter(s.structure for s in samples)
    negs = sum(s.negative for s in samples)
    images = len({s.image_key for s in samples})
    typer.echo(
        f"{path}: {len(samples)} samples ({negs} negatives) over {images} images/volumes, {len(report.skipped)} skipped"
    )
    typer.echo("per modality:")
    for k, v in by_mod.most_common():
        typer.echo(f"  {v:6d}  {k}")
    typer.echo(f"per target ({len(by_target)}):")
    for k, v in by_target.most_common():
        typer.echo(f"  {v:6d}  {k}")
    _print_skipped(report)
    if samples:
        sheet = sheet or Path("runs") / "inspect_sheet.png"
        save_png(sheet, contact_sheet(samples, n=n))
        typer.echo(f"contact sheet: {sheet}")
    if json_out:
        doc = {
            "path": str(path),
            "samples": len(samples),
            "negatives": negs,
            "images": images,
            "per_modality": dict(by_mod),
            "per_target": dict(by_target),
            "skipped": [{"what": s.what, "reason": s.reason} for s in report.skipped],
        }
        atomic_write_bytes(json_out, json.dumps(doc, indent=1).encode())


ParaURL = Annotated[
    str | None, typer.Option(help="OpenAI-compatible base URL (e.g. http://localhost:8000/v1); off by default")
]
ParaModel = Annotated[str, typer.Option(help="Model name for the paraphrasing endpoint")]
ParaCache = Annotated[Path, typer.Option(help="Paraphrase cache folder")]


@app.command()
def queries(
    path: PathArg,
    out: Annotated[Path, typer.Option(help="JSONL to write: one query per line")] = Path("queries.jsonl"),
    kinds: Annotated[str, typer.Option(help="Comma list of referring,reasoning,refinement,closed")] = (
        "referring,reasoning,refinement,closed"
    ),
    seed: Annotated[int, typer.Option(help="Template seed")] = 0,
    absent: Annotated[int, typer.Option(min=0, help="Absent-target negatives per image (answer 'no')")] = 1,
    paraphrase_url: ParaURL = None,
    paraphrase_model: ParaModel = "gpt-4o-mini",
    paraphrase_cache: ParaCache = Path(".cache/paraphrase"),
    labels: LabelsOpt = None,
    names: NamesOpt = None,
    axis: AxisOpt = "axial",
    window: WindowOpt = "auto",
    negatives: NegOpt = False,
    step: StepOpt = 1,
    modality: ModalityOpt = None,
    series: SeriesOpt = None,
) -> None:
    """Write seeded queries (referring, reasoning, refinement, closed yes/no incl. absent targets).

    Example: ibisagent data queries ibisagent/assets/demo --out runs/q.jsonl --seed 1
    """
    run_guarded(
        _queries,
        path,
        out,
        kinds,
        seed,
        absent,
        paraphrase_url,
        paraphrase_model,
        paraphrase_cache,
        labels,
        names,
        axis,
        window,
        negatives,
        step,
        modality,
        series,
    )


def _query_inputs(path, kinds: str, seed: int, absent: int, paraphrase: tuple, open_args: tuple):
    """What `queries` and `export` share: the dataset report, its samples plus `absent` absent-target
    negatives per image, the query kinds as a list, and the paraphraser (None without a URL)."""
    from ibisagent.data.paraphrase import from_env
    from ibisagent.data.queries import absent_targets

    report = _open(path, *open_args)
    samples = report.samples + (absent_targets(report.samples, seed, absent) if absent else [])
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    return report, samples, kind_list, from_env(*paraphrase)


def _queries(
    path,
    out,
    kinds,
    seed,
    absent,
    p_url,
    p_model,
    p_cache,
    labels,
    names,
    axis,
    window,
    negatives,
    step,
    modality,
    series,
):
    from ibisagent.data.queries import build_queries, paraphrase_queries
    from ibisagent.io.images import atomic_write_bytes

    report, samples, kind_list, para = _query_inputs(
        path,
        kinds,
        seed,
        absent,
        (p_url, p_model, p_cache),
        (labels, names, axis, window, negatives, step, modality, series),
    )
    pairs = build_queries(samples, kind_list, seed)
    if para is not None:
        pairs = paraphrase_queries(pairs, para)
    lines = []
    for s, q in pairs:
        row = {
            **q.to_dict(),
            "image": str(s.image),
            "mask": str(s.mask) if s.mask else None,
            "frame": s.frame,
            "modality": s.modality,
            "origin": s.origin,
        }
        lines.append(json.dumps(row))
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())
    typer.echo(
        f"{len(pairs)} queries for {len(samples)} samples ({len(samples) - len(report.samples)} absent-target) -> {out}"
    )
    if para is not None:
        typer.echo(f"paraphrase: {para.stats}")
    _print_skipped(report)


@app.command()
def export(
    path: PathArg,
    out: Annotated[Path, typer.Option(help="Folder for the DatasetDict (datasets.load_from_disk)")],
    kinds: Annotated[str, typer.Option(help="Query kinds per sample (comma list), or '' for none")] = "referring",
    seed: Annotated[int, typer.Option(help="Template seed")] = 0,
    heldout_percent: Annotated[int, typer.Option(min=0, max=100, help="Share of images in the test split")] = 15,
    absent: Annotated[int, typer.Option(min=0, help="Absent-target negatives per image")] = 0,
    paraphrase_url: ParaURL = None,
    paraphrase_model: ParaModel = "gpt-4o-mini",
    paraphrase_cache: ParaCache = Path(".cache/paraphrase"),
    labels: LabelsOpt = None,
    names: NamesOpt = None,
    axis: AxisOpt = "axial",
    window: WindowOpt = "auto",
    negatives: NegOpt = False,
    step: StepOpt = 1,
    modality: ModalityOpt = None,
    series: SeriesOpt = None,
) -> None:
    """Export to a Hugging Face `datasets` DatasetDict (train/test split by image; images and
    masks as Image features).

    Example: ibisagent data export ibisagent/assets/demo --out runs/demo_hf --kinds referring,closed
    """
    run_guarded(
        _export,
        path,
        out,
        kinds,
        seed,
        heldout_percent,
        absent,
        paraphrase_url,
        paraphrase_model,
        paraphrase_cache,
        labels,
        names,
        axis,
        window,
        negatives,
        step,
        modality,
        series,
    )


def _export(
    path,
    out,
    kinds,
    seed,
    heldout,
    absent,
    p_url,
    p_model,
    p_cache,
    labels,
    names,
    axis,
    window,
    negatives,
    step,
    modality,
    series,
):
    from ibisagent.data.hf_export import export_hf

    report, samples, kind_list, para = _query_inputs(
        path,
        kinds,
        seed,
        absent,
        (p_url, p_model, p_cache),
        (labels, names, axis, window, negatives, step, modality, series),
    )
    counts, skipped = export_hf(samples, out, kind_list or None, seed, heldout, para)
    report.skipped += skipped.skipped
    typer.echo(f"exported {counts} rows to {out} ({len(report.skipped)} samples skipped)")
    _print_skipped(report)

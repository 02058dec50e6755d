"""`ibisagent simulate`: oracle-click episodes on image/mask pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import LimitOpt, StrategyOpt, ToolOpt, UpdateOpt, make_tool_from_opts, run_guarded
from ibisagent.io.jsonl import JsonlAppender, read_jsonl

app = typer.Typer()


@app.command()
def simulate(
    pairs: Annotated[Path, typer.Argument(help="A pairs.csv (image,mask,structure[,modality]) or its folder")],
    max_clicks: Annotated[int, typer.Option(min=1, max=100, help="Clicks per episode")] = 20,
    out: Annotated[Path, typer.Option(help="Output folder: results.jsonl, summary.json, overlays/")] = Path(
        "runs/simulate"
    ),
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary JSON here")] = None,
    tool: ToolOpt = "litemedsam",
    strategy: StrategyOpt = "points+prior",
    update: UpdateOpt = "global",
    limit: LimitOpt = None,
    overlays: Annotated[
        bool, typer.Option(help="Write a final overlay PNG per pair (clicks and outline drawn)")
    ] = True,
    resume: Annotated[bool, typer.Option(help="Skip pairs already in OUT/results.jsonl")] = True,
) -> None:
    """Run the reference click simulator (the paper's oracle clicks) against the segmentation tool.

    Each pair gets an episode of up to MAX_CLICKS oracle clicks (positive in the largest missed
    region, negative in the largest extra region). Prints mean IoU after 1/3/5/10/20 clicks (those
    up to MAX_CLICKS) and NoC@80/85/90 overall and per modality.

    Example: ibisagent simulate ibisagent/assets/demo --max-clicks 10 --out runs/sim
    """
    run_guarded(_simulate, pairs, max_clicks, out, summary_json, tool, strategy, update, limit, overlays, resume)


def _simulate(pairs, max_clicks, out, summary_json, tool, strategy, update, limit, overlays, resume):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.env.env import IbisEnv
    from ibisagent.eval.interactive import simulate_sample, summarize_rows
    from ibisagent.io.images import atomic_write_bytes
    from ibisagent.progress import progress_bar

    samples = read_pairs_csv(pairs)[:limit]
    seg_tool = make_tool_from_opts(tool, strategy, update)
    env = IbisEnv(seg_tool, max_steps=max_clicks)
    results_path = out / "results.jsonl"
    done = {r["id"]: r for r in read_jsonl(results_path)} if resume else {}
    if not resume and results_path.exists():
        results_path.unlink()
    writer = JsonlAppender(results_path)
    rows = []
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with progress_bar(*columns, console=console) as bar:
            task = bar.add_task("simulating", total=len(samples))
            for s in samples:
                if s.id in done:
                    rows.append(done[s.id])
                else:
                    safe = s.id.replace("/", "__").replace(" ", "_")
                    row = simulate_sample(
                        env, s, max_clicks, overlay_path=out / "overlays" / f"{safe}.png" if overlays else None
                    )
                    writer.write(row)
                    rows.append(row)
                    if row.get("error"):
                        console.print(f"[yellow]skipped[/] {row['error']}")
                bar.advance(task)
    finally:
        writer.close()
    summary = measured_only(summarize_rows(rows, max_clicks), max_clicks)
    summary.update(tool=seg_tool.name, max_clicks=max_clicks, pairs=str(pairs))
    blob = json.dumps(summary, indent=1).encode()
    atomic_write_bytes(out / "summary.json", blob)
    if summary_json:
        atomic_write_bytes(summary_json, blob)
    print_summary(summary, console=Console())


def measured_only(summary: dict, max_clicks: int) -> dict:
    """Drop IoU@k for k past MAX_CLICKS (an episode of 10 clicks has no IoU@20 to report)."""
    for s in (summary, *summary.get("per_modality", {}).values()):
        s["mean_iou_at"] = {k: v for k, v in s.get("mean_iou_at", {}).items() if int(k) <= max_clicks}
    return summary


def print_summary(summary: dict, console) -> None:
    from rich.markup import escape

    from ibisagent.cli.common import narrow_table

    ks = list(summary["mean_iou_at"])
    # escape: the tool's name holds brackets ("litemedsam[clicks,points+prior]") that rich reads as markup
    title = f"{escape(summary.get('tool', ''))}: oracle clicks, {summary['n']} pairs ({summary['errors']} skipped)"
    table = narrow_table(title, ("modality", "n", *[f"IoU@{k}" for k in ks], "NoC@80", "NoC@85", "NoC@90"))

    def add(name, s):
        table.add_row(
            name,
            str(s["n"]),
            *[f"{s['mean_iou_at'][k]:.3f}" for k in ks],
            *[f"{s['noc'][t]:.2f}" for t in ("80", "85", "90")],
        )

    for m, s in summary["per_modality"].items():
        add(m, s)
    if summary["n"]:
        add("[bold]all", summary)
    console.print(table)
    shares = summary.get("clicks_honoured") or {}
    if any(v is not None for v in shares.values()):
        text = ", ".join(f"{k} {v:.0%}" for k, v in shares.items() if v is not None)
        console.print(f"clicks honoured (the mask agrees with the click at its pixel): {text}")

"""`ibisagent synth`: cold-start trajectories (SFT chat rows, ShareGPT, RL Parquet) from a dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import FreshOpt, LimitOpt, SplitOpt, StrategyOpt, ToolOpt, run_guarded

app = typer.Typer()


@app.command()
def synth(
    dataset: Annotated[str, typer.Argument(help="A dataset: pairs.csv, its folder, or a tree of them, ...")],
    out: Annotated[Path, typer.Option(help="Output folder (resumable)")] = Path("runs/synth"),
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (or Ray actors)")] = 1,
    backend: Annotated[
        str, typer.Option(help="process (a local process pool) or ray (needs the ray extra; one actor per worker)")
    ] = "process",
    ray_address: Annotated[
        str | None,
        typer.Option(help="--backend ray: a Ray cluster's address (default $RAY_ADDRESS, else a local Ray)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every choice (queries, kinds, wording)")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads per worker")] = 1,
    limit: LimitOpt = None,
    split: SplitOpt = "all",
    mix: Annotated[
        str,
        typer.Option(
            help="Probabilities per kind, e.g. 'refine=0.5,discard=0' (segment,refine,self_correction,discard,vqa,negative)"
        ),
    ] = "",
    iou_threshold: Annotated[float, typer.Option(min=0.1, max=1.0, help="Stop clicking at this IoU")] = 0.8,
    max_clicks: Annotated[int, typer.Option(min=1, max=50, help="Clicks per trajectory")] = 20,
    min_final_iou: Annotated[float, typer.Option(min=0.0, max=1.0, help="Skip trajectories ending below")] = 0.5,
    max_pixels: Annotated[
        int, typer.Option(min=0, help="Observation images resized to at most this many pixels (0: keep)")
    ] = 512 * 512,
    shard_size: Annotated[int, typer.Option(min=1, help="Items per shard (the unit of resume)")] = 16,
    embedding_cache: Annotated[
        Path | None, typer.Option(help="Reuse encoder outputs cached here (e.g. ~/.cache/ibisagent/embeddings)")
    ] = None,
    teacher_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint to rewrite reasoning (off by default)")
    ] = None,
    teacher_model: Annotated[str, typer.Option(help="Model name for the teacher endpoint")] = "gpt-4o-mini",
    history: Annotated[
        bool, typer.Option(help="ShareGPT rows carry the earlier turns (else one turn, as released)")
    ] = False,
    export: Annotated[bool, typer.Option(help="Write the exports (chat dataset, ShareGPT, RL Parquet)")] = True,
    fresh: FreshOpt = False,
    tool: ToolOpt = "litemedsam",
    strategy: StrategyOpt = "points+prior",
) -> None:
    """Synthesize click trajectories with grounded reasoning (the paper's cold-start data;
    protocol extensions in docs/protocol.md).

    Every sample gets an oracle-click trajectory through the real environment and tool; some get
    refinement, self-correction and discard trajectories; absent targets give "no" answers;
    yes/no questions give VQA turns. Writes OUT/trajectories.jsonl, OUT/summary.json,
    OUT/export/chat (datasets), OUT/sharegpt.json (+ dataset_info.json, LLaMA-Factory),
    OUT/export/rl.parquet. Interrupted runs resume from their finished shards.

    Example: ibisagent synth ibisagent/assets/demo --out runs/synth --workers 2 [--backend ray]
    """
    run_guarded(_synth, **locals())


def _synth(dataset, out, workers, backend, ray_address, seed, threads, limit, split, mix, iou_threshold, max_clicks,
           min_final_iou, max_pixels, shard_size, embedding_cache, teacher_url, teacher_model, history, export, fresh,
           tool, strategy):  # fmt: skip
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from ibisagent.progress import progress_bar
    from ibisagent.synth.generate import SynthConfig
    from ibisagent.synth.job import JobConfig, load_trajectories, run_synth
    from ibisagent.synth.plan import parse_mix

    synth_cfg = SynthConfig(iou_threshold=iou_threshold, max_clicks=max_clicks, min_final_iou=min_final_iou, seed=seed)
    teacher = None
    if teacher_url:
        teacher = {
            "base_url": teacher_url,
            "model": teacher_model,
            "cache_dir": str(out / "teacher_cache"),
            "api_key": os.environ.get("OPENAI_API_KEY"),
        }
    cfg = JobConfig(
        data=str(dataset),
        seed=seed,
        workers=workers,
        backend=backend,
        ray_address=ray_address,
        threads=threads,
        shard_size=shard_size,
        limit=limit,
        split=split,
        mix=parse_mix(mix),
        tool=tool,
        tool_kwargs={"strategy": strategy} if tool.startswith("litemedsam") else {},
        synth=synth_cfg.__dict__,
        max_pixels=max_pixels,
        embedding_cache=str(embedding_cache.expanduser()) if embedding_cache else None,
        teacher=teacher,
    )
    console = Console(stderr=True)
    with progress_bar(
        TextColumn("synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shards"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("synth", total=None)

        def progress(done: int, total: int, _res: dict) -> None:
            bar.update(task, completed=done, total=total)

        summary = run_synth(cfg, out, fresh=fresh, progress=progress)
    if export:
        from ibisagent.io.images import atomic_write_bytes
        from ibisagent.synth.export import export_all

        summary["exports"] = export_all(out, load_trajectories(out), history=history)
        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    typer.echo(json.dumps(summary, indent=1))

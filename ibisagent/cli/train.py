"""`ibisagent train ...`: training commands (the tool's click path; agent policies later)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import run_guarded

app = typer.Typer(help="Train the segmentation tool and the agent policies.", no_args_is_help=True)


def collect_pairs(paths: list[Path]) -> list:
    """Samples from pairs.csv files, folders holding one, or folders searched recursively."""
    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.errors import IbisInputError

    samples = []
    for p in paths:
        if p.is_file() or (p / "pairs.csv").exists():
            samples += read_pairs_csv(p)
        elif p.is_dir():
            found = sorted(p.rglob("pairs.csv"))
            if not found:
                raise IbisInputError(p, "no pairs.csv in this folder or below")
            for f in found:
                samples += read_pairs_csv(f)
        else:
            raise IbisInputError(p, "no such file or folder")
    return samples


@app.command("tool")
def train_tool(
    data: Annotated[list[Path], typer.Argument(help="pairs.csv files or folders (searched for pairs.csv)")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, log, weights, report")] = Path("runs/tool"),
    minutes: Annotated[float, typer.Option(help="Optimisation budget in minutes (embedding not included)")] = 40.0,
    cache_dir: Annotated[Path, typer.Option(help="On-disk embedding cache")] = Path.home() / ".cache/ibisagent/embeddings",
    heldout: Annotated[int, typer.Option(min=0, max=90, help="Held-out percent of images (split by image)")] = 15,
    eval_clicks: Annotated[int, typer.Option(help="Oracle clicks per held-out episode in the final evaluation")] = 20,
    install: Annotated[bool, typer.Option(help="Copy the weights and model card into the package (the new default)")] = False,
    seed: int = 0,
) -> None:
    """Fine-tune LiteMedSAM's prompt encoder + mask decoder to answer clicks.

    Embeds every image once (cached on disk; reruns skip it), trains with simulated click
    sessions for MINUTES, resumes from OUT/checkpoint.pt after an interruption, then measures
    held-out IoU after 1/3/5/10 clicks, NoC@80/85/90 and GT-box IoU before and after, and writes
    OUT/report.json and OUT/MODEL_CARD.md.

    Example: ibisagent train tool ../shared/data --minutes 40 --install
    """
    run_guarded(_train_tool, data, out, minutes, cache_dir, heldout, eval_clicks, install, seed)


def _train_tool(data, out, minutes, cache_dir, heldout, eval_clicks, install, seed):
    from ibisagent.train.tool_pipeline import run_tool_training

    run_tool_training(data, out, minutes, cache_dir, heldout, eval_clicks, install, seed)

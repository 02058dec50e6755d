"""What the CLI commands share: error reporting and tool options."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ibisagent.errors import IbisInputError

ToolOpt = Annotated[
    str,
    typer.Option(
        "--tool",
        help="Segmentation tool: litemedsam, litemedsam:original, litemedsam:PATH.pt, "
        "sam2:CONFIG.yaml:CHECKPOINT.pt (SAM2.1 / MedSAM2; needs the sam2 extra, docs/tools.md; "
        "medsam2: is the same), or a tool server http://HOST:PORT (ibisagent serve)",
    ),
]
StrategyOpt = Annotated[
    str,
    typer.Option(help="LiteMedSAM prompt strategy: points, points+prior, box, box+points, box+points+prior"),
]
UpdateOpt = Annotated[
    str,
    typer.Option(
        help="LiteMedSAM update rule: global (the decoder's whole new mask at every click, the default) or "
        "local (the mask changes only where the change touches the newest click: a correction elsewhere "
        "cannot erase other parts; docs/tools.md)",
    ),
]
# the choices of ibisagent.data.volume_io.AXES and ibisagent.data.windowing.WINDOW_CHOICES (not imported:
# `--help` stays free of numpy; tests/core/test_cli.py checks they agree)
AXES_HELP = "axial, coronal, sagittal"
WINDOWS_HELP = "auto, percentile, abdomen, liver, lung, bone, brain"
AxisOpt = Annotated[str, typer.Option(help=f"Volumes: slice axis ({AXES_HELP})")]
WindowOpt = Annotated[str, typer.Option(help=f"Volumes: window preset ({WINDOWS_HELP})")]
MaxStepsOpt = Annotated[int, typer.Option(min=1, max=100, help="Actions per episode at most (released: 20)")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="Only the first N samples")]
SplitOpt = Annotated[
    str,
    typer.Option(
        help="Which images: all, train or heldout (the split by image of train compact / eval heldout: "
        "15% of each dataset's images held out)"
    ),
]
FreshOpt = Annotated[bool, typer.Option(help="Start over: discard earlier results in OUT instead of resuming")]


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_guarded(fn, *args, **kwargs):
    """Run a command body: user errors become one line on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except IbisInputError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        if os.environ.get("IBISAGENT_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.filename:
            # a file-system error (no space, no permission, a file where a folder should be): path and why
            fail(f"{exc.filename}: {exc.strerror or exc.__class__.__name__}")
        fail(f"{exc.__class__.__name__}: {exc} (set IBISAGENT_DEBUG=1 for the traceback)", 1)


def make_tool_from_opts(tool: str, strategy: str, update: str = "global"):
    from ibisagent.tools import check_update_rule, make_tool

    check_update_rule(tool, update)
    if not tool.startswith("litemedsam"):
        return make_tool(tool)
    return make_tool(tool, strategy=strategy, update=update)


def narrow_table(title: str | None = None, columns: tuple[str, ...] = (), left: int = 1):
    """A rich Table that fits an 80-column terminal: no side borders, one space between columns;
    the first `left` columns are left-aligned, the rest (figures) right-aligned. Longer cells fold
    onto the next line instead of being cut."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False, collapse_padding=True)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < left else "right", overflow="fold")
    return table


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()

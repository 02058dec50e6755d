"""The `ibisagent` command line. Each command group lives in its own module."""

from __future__ import annotations

import typer

from ibisagent import __version__
from ibisagent.cli import click, simulate, train
from ibisagent.cli import data as data_cmd
from ibisagent.cli import eval as eval_cmd
from ibisagent.cli import segment as segment_cli
from ibisagent.cli import serve as serve_cli
from ibisagent.cli import synth as synth_cli
from ibisagent.cli import teach as teach_cli

app = typer.Typer(
    help="ibisagent: segment biomedical objects from a text query by reasoning and clicking.",
    epilog="Environment: IBISAGENT_DEBUG=1 shows tracebacks; IBISAGENT_ENCODER_PRECISION=bf16 runs the image "
    "encoder in bfloat16 on CPUs that compute it natively (about 1.7x faster, a little less accurate; default f32); "
    "IBISAGENT_NATIVE_BF16=0 treats the CPU as one without native bfloat16.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(simulate.app)
app.add_typer(click.app)
app.add_typer(data_cmd.app, name="data")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(serve_cli.app)
app.add_typer(train.app, name="train")
app.add_typer(synth_cli.app)
app.add_typer(segment_cli.app)
app.add_typer(teach_cli.app)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version")):
    pass


def main() -> None:
    app()

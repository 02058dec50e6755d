"""`ibisagent serve` (REST API + web page) and `ibisagent app` (the same, opened in a browser)."""

from __future__ import annotations

from typing import Annotated

import typer

from ibisagent.cli.common import StrategyOpt, ToolOpt, fail, run_guarded

app = typer.Typer()

HostOpt = Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for all interfaces)")]
PortOpt = Annotated[int, typer.Option(help="TCP port")]
MaxMiBOpt = Annotated[float, typer.Option("--max-upload-mib", help="Largest request body, MiB")]
MaxPxOpt = Annotated[int, typer.Option("--max-pixels", help="Largest image, width x height pixels")]
WorkersOpt = Annotated[int, typer.Option(help="Requests working at once (the tool itself runs one call at a time)")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Torch CPU threads for the tool (default: torch's choice)")]
TimeoutOpt = Annotated[float, typer.Option("--episode-timeout", help="Wall-time limit of one agent episode, s")]


def _serve(host, port, tool, strategy, max_upload_mib, max_pixels, workers, threads, limits, open_browser):
    from ibisagent.errors import IbisInputError

    try:
        import uvicorn

        from ibisagent.app.api import create_app
        from ibisagent.app.config import ServeConfig
        from ibisagent.app.server import uvicorn_config
    except ImportError as exc:
        raise IbisInputError(
            "serve", f"missing dependency {exc.name!r}; install: pip install 'ibisagent[serve]'"
        ) from None
    if not 1 <= port <= 65535:
        raise IbisInputError(port, "--port must be in 1..65535")
    if max_upload_mib <= 0 or max_pixels <= 0 or workers < 1:
        raise IbisInputError("limits", "--max-upload-mib, --max-pixels and --workers must be positive")
    config = ServeConfig(
        tool=tool,
        strategy=strategy,
        threads=threads,
        max_upload_bytes=int(max_upload_mib * 1024 * 1024),
        max_pixels=max_pixels,
        workers=workers,
        **limits,
    )
    typer.echo(f"loading the tool ({tool}) ...", err=True)
    api = create_app(config)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    typer.echo(f"web app: {url}   REST API docs: {url}docs   (Ctrl+C stops)", err=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.5, webbrowser.open, args=(url,)).start()
    try:
        uvicorn.Server(uvicorn_config(api, config, host, port)).run()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc})")


OpenOpt = Annotated[bool, typer.Option("--open/--no-open", help="Open the page in a browser")]
BodyTimeoutOpt = Annotated[
    float, typer.Option("--body-timeout", min=0.1, help="A request body must arrive within this many seconds (408)")
]
MaxConnOpt = Annotated[
    int, typer.Option("--max-connections", min=1, help="Connections + requests at once (503 beyond)")
]


def _command(name: str, open_default: bool, doc: str) -> None:
    """Register `name` (serve / app): the same options and server; only --open's default differs."""

    def command(
        host: HostOpt = "127.0.0.1",
        port: PortOpt = 8000,
        tool: ToolOpt = "litemedsam",
        strategy: StrategyOpt = "points+prior",
        max_upload_mib: MaxMiBOpt = 32.0,
        max_pixels: MaxPxOpt = 4096 * 4096,
        workers: WorkersOpt = 4,
        threads: ThreadsOpt = None,
        episode_timeout: TimeoutOpt = 60.0,
        body_timeout: BodyTimeoutOpt = 60.0,
        max_connections: MaxConnOpt = 256,
        open_browser: OpenOpt = open_default,
    ) -> None:
        limits = dict(episode_timeout_s=episode_timeout, body_timeout_s=body_timeout, max_connections=max_connections)
        run_guarded(
            _serve, host, port, tool, strategy, max_upload_mib, max_pixels, workers, threads, limits, open_browser
        )

    command.__doc__ = doc
    app.command(name)(command)


_command(
    "serve",
    False,
    """Start the REST API (POST /v1/images, /v1/tool/segment, /v1/segment, /v1/sessions; GET /healthz) and the web page.

    Example: ibisagent serve --port 8000, then open http://127.0.0.1:8000/docs
    """,
)
_command(
    "app",
    True,
    """Start the web app: upload an image, ask, watch the agent's steps, correct it with clicks.

    Example: ibisagent app --port 8000 (then open http://127.0.0.1:8000/)
    """,
)

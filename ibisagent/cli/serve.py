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


def _serve(host, port, tool, strategy, max_upload_mib, max_pixels, workers, threads, episode_timeout, open_browser):
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
        episode_timeout_s=episode_timeout,
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


@app.command()
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    tool: ToolOpt = "litemedsam",
    strategy: StrategyOpt = "points+prior",
    max_upload_mib: MaxMiBOpt = 32.0,
    max_pixels: MaxPxOpt = 4096 * 4096,
    workers: WorkersOpt = 4,
    threads: ThreadsOpt = None,
    episode_timeout: TimeoutOpt = 60.0,
) -> None:
    """Start the REST API (POST /v1/images, /v1/tool/segment, /v1/segment; GET /healthz) and the web page.

    Example: ibisagent serve --port 8000, then open http://127.0.0.1:8000/docs
    """
    run_guarded(
        _serve, host, port, tool, strategy, max_upload_mib, max_pixels, workers, threads, episode_timeout, False
    )


@app.command("app")
def web_app(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    tool: ToolOpt = "litemedsam",
    strategy: StrategyOpt = "points+prior",
    max_upload_mib: MaxMiBOpt = 32.0,
    max_pixels: MaxPxOpt = 4096 * 4096,
    workers: WorkersOpt = 4,
    threads: ThreadsOpt = None,
    episode_timeout: TimeoutOpt = 60.0,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open the page in a browser")] = True,
) -> None:
    """Start the web app: upload an image, ask, watch the agent's steps, correct it with clicks.

    Example: ibisagent app --port 8000 (then open http://127.0.0.1:8000/)
    """
    run_guarded(
        _serve, host, port, tool, strategy, max_upload_mib, max_pixels, workers, threads, episode_timeout, open_browser
    )

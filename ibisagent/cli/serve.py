"""`ibisagent serve` (REST API + web page) and `ibisagent app` (the same, opened in a browser)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import StrategyOpt, ToolOpt, UpdateOpt, fail, run_guarded

app = typer.Typer()

HostOpt = Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for all interfaces)")]
PortOpt = Annotated[int, typer.Option(help="TCP port")]
MaxMiBOpt = Annotated[float, typer.Option("--max-upload-mib", help="Largest request body, MiB")]
MaxPxOpt = Annotated[int, typer.Option("--max-pixels", help="Largest image, width x height pixels")]
WorkersOpt = Annotated[int, typer.Option(help="Requests working at once (the tool itself runs one call at a time)")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Torch CPU threads for the tool (default: torch's choice)")]
TimeoutOpt = Annotated[float, typer.Option("--episode-timeout", help="Wall-time limit of one agent episode, s")]
PolicyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--policy",
        help="A policy clients may run, NAME=SPEC or SPEC (named by its part before ':'); repeat for more. "
        "Clients choose by NAME; the first is the default. Default: compact, plus oracle (needs a reference mask)",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(envvar="IBISAGENT_TOKEN", help="Require 'Authorization: Bearer TOKEN' on /v1 (env IBISAGENT_TOKEN)"),
]
HostsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-host",
        help="Host header accepted (repeat; '*' any). Default: localhost names, plus --host when it is one address",
    ),
]
CorsOpt = Annotated[list[str] | None, typer.Option("--cors-origin", help="Allow this origin cross-origin (repeat)")]
ToolTimeoutOpt = Annotated[
    float, typer.Option("--tool-timeout", min=0.1, help="Longest one tool call may take, s (429 beyond)")
]
MemoryOpt = Annotated[
    float, typer.Option("--max-memory-mib", min=64, help="Bound on what the server's stores hold in total, MiB")
]
TeachDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Let the page teach the compact policy from accepted masks; taught policies go here as "
        "taught-N and become policies clients may run (default: teaching off)"
    ),
]
MaxTaughtOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="With --teach-dir: taught policies the server keeps (each counts in --max-memory-mib; "
        "a teach request beyond them is refused with 507)",
    ),
]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _allowed_hosts(host: str, given: list[str] | None) -> tuple[str, ...]:
    if given:
        return tuple(given)
    if host in ("0.0.0.0", "::"):
        typer.echo(
            "warning: listening on all interfaces with any Host header accepted; give --allowed-host NAME "
            "(and --token) before exposing it (README: Exposing the server safely)",
            err=True,
        )
        return ("*",)
    return tuple(dict.fromkeys((host, *LOOPBACK)))


def _serve(host, port, tool, strategy, update, max_upload_mib, max_pixels, workers, threads, limits, open_browser):
    from ibisagent.errors import IbisInputError

    try:
        import uvicorn

        from ibisagent.app.api import create_app
        from ibisagent.app.config import ServeConfig
        from ibisagent.app.server import return_freed_memory, uvicorn_config
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
        update=update,
        threads=threads,
        max_upload_bytes=int(max_upload_mib * 1024 * 1024),
        max_pixels=max_pixels,
        workers=workers,
        **limits,
    )
    config.check()
    typer.echo(f"loading the tool ({tool}) ...", err=True)
    api = create_app(config)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
    page = f"{url}#token={config.token}" if config.token else url
    typer.echo(f"web app: {page}   REST API docs: {url}docs   (Ctrl+C stops)", err=True)
    typer.echo(f"policies clients may run: {', '.join(api.state.service.policies.names)}", err=True)
    if config.teach_dir:
        typer.echo(f"teaching from accepted masks is on; taught policies go to {config.teach_dir}", err=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.5, webbrowser.open, args=(url,)).start()
    return_freed_memory()
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
        update: UpdateOpt = "global",
        max_upload_mib: MaxMiBOpt = 32.0,
        max_pixels: MaxPxOpt = 4096 * 4096,
        workers: WorkersOpt = 4,
        threads: ThreadsOpt = None,
        episode_timeout: TimeoutOpt = 60.0,
        body_timeout: BodyTimeoutOpt = 60.0,
        max_connections: MaxConnOpt = 256,
        policy: PolicyOpt = None,
        token: TokenOpt = None,
        allowed_host: HostsOpt = None,
        cors_origin: CorsOpt = None,
        tool_timeout: ToolTimeoutOpt = 30.0,
        max_memory_mib: MemoryOpt = 3072.0,
        teach_dir: TeachDirOpt = None,
        max_taught: MaxTaughtOpt = 8,
        open_browser: OpenOpt = open_default,
    ) -> None:
        limits = dict(
            episode_timeout_s=episode_timeout,
            body_timeout_s=body_timeout,
            max_connections=max_connections,
            policies=tuple(policy) if policy else ("compact", "oracle"),
            token=token or None,
            allowed_hosts=_allowed_hosts(host, allowed_host),
            cors_origins=tuple(cors_origin or ()),
            tool_timeout_s=tool_timeout,
            max_memory_bytes=int(max_memory_mib * 1024 * 1024),
            teach_dir=str(teach_dir) if teach_dir else None,
            max_taught=max_taught,
        )
        run_guarded(
            _serve,
            host,
            port,
            tool,
            strategy,
            update,
            max_upload_mib,
            max_pixels,
            workers,
            threads,
            limits,
            open_browser,
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

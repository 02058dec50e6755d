"""Run the server on loopback in a background thread (for browser tests and the load benchmark)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    app, host: str = "127.0.0.1", port: int | None = None, start_timeout_s: float = 30.0
) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread, with the limits of its `ServeConfig` (as `ibisagent
    serve`); yields the base URL ("http://127.0.0.1:PORT") and stops the server on exit."""
    import uvicorn

    from ibisagent.app.config import ServeConfig
    from ibisagent.app.server import uvicorn_config

    port = port or free_port(host)
    config = getattr(app.state, "config", None) or ServeConfig()
    server = uvicorn.Server(uvicorn_config(app, config, host, port, lifespan="off"))
    thread = threading.Thread(target=server.run, name="ibisagent-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

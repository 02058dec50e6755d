"""The HTTP server around the app: uvicorn with every time and connection limit set explicitly.

- `header_timeout_s`: a connection must deliver a complete request head (request line and
  headers) within this time after it opens, or after it starts a next request; else it is
  closed. uvicorn has no such timer of its own, so a client that trickles headers (slowloris)
  would hold its connection for ever.
- `body_timeout_s`: the whole request body must arrive within this time (408), enforced with the
  size limit by `limits.BodyLimit` in the app.
- `keep_alive_s`: an idle kept-alive connection is closed after this time (uvicorn's
  `timeout_keep_alive`).
- `max_connections`: connections plus requests in progress beyond this are answered 503
  (uvicorn's `limit_concurrency`); `workers`/`max_queue` bound the work behind them (429).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

from ibisagent.app.config import ServeConfig


class HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head (`header_timeout` s)."""

    header_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_head():
            if self._head_timer is None and not self.transport.is_closing():
                self._arm_head_timer()  # part of a next request's head: its clock starts now
        else:
            self._disarm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm_head_timer()  # idle from here on: the keep-alive timer takes over

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.logger.info("closing a connection that sent no complete request head within %gs", self.header_timeout)
            self.transport.close()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def return_freed_memory(mmap_threshold: int = 1 << 20) -> bool:
    """Ask glibc to serve allocations of `mmap_threshold` bytes or more with mmap, so that the
    large per-request arrays (masks, overlays of a 4096^2 image: tens of MB each) go back to the
    system when freed instead of staying in the heap of whichever worker thread made them (glibc
    raises its mmap threshold after each such free, and keeps one heap per thread). Without it a
    session's clicks grow the process by far more than the session holds. False where not glibc."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, 4 * mmap_threshold)
        )
    except (OSError, AttributeError):
        return False


def uvicorn_config(app, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, **kwargs):
    """A `uvicorn.Config` for `app` with the limits of `config` (kwargs: other uvicorn settings)."""
    import uvicorn

    protocol = type("IbisH11Protocol", (HeadTimeoutH11,), {"header_timeout": config.header_timeout_s})
    settings = {
        "log_level": "warning",
        "http": protocol,
        "timeout_keep_alive": config.keep_alive_s,
        "limit_concurrency": config.max_connections,
        **kwargs,
    }
    return uvicorn.Config(app, host=host, port=port, **settings)

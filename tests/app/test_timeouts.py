"""Time limits of the real server (uvicorn on loopback, as `ibisagent serve` runs it): a connection
that trickles its request head, a body that stalls or trickles, and an idle kept-alive connection
are all cut off after their explicit limits, and the server keeps serving others."""

from __future__ import annotations

import socket
import time

import pytest

HEAD = 0.6
BODY = 1.0
KEEP_ALIVE = 1


@pytest.fixture(scope="module")
def server(tool):
    pytest.importorskip("uvicorn")
    from ibisagent.app.api import create_app
    from ibisagent.app.background import running_server
    from ibisagent.app.config import ServeConfig

    config = ServeConfig(header_timeout_s=HEAD, body_timeout_s=BODY, keep_alive_s=KEEP_ALIVE, max_pixels=1024 * 1024)
    with running_server(create_app(config, tool=tool)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def _connect(server) -> socket.socket:
    s = socket.create_connection(server, timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _read_all(s: socket.socket) -> tuple[bytes, float]:
    """Everything until the server closes; and when it closed (monotonic)."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data, time.monotonic()
        data += chunk


def _healthy(server) -> None:
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data, _ = _read_all(s)
    assert data.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in data


def test_a_trickled_request_head_is_cut_off(server):
    for sent in (b"", b"POST /v1/images HTTP/1.1\r\nHost: t\r\n"):  # silent, then a partial head
        with _connect(server) as s:
            t0 = time.monotonic()
            s.sendall(sent)
            try:
                for _ in range(20):  # one header line every 0.1 s: the head never completes in time
                    time.sleep(0.1)
                    s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass  # closed under us: what we want
            data, closed = _read_all(s)
        assert data == b"" and HEAD - 0.1 <= closed - t0 < HEAD + 1.5
    _healthy(server)


def test_a_stalled_or_trickled_body_gets_408(server):
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    for trickle in (False, True):
        with _connect(server) as s:
            t0 = time.monotonic()
            s.sendall(head + b"\x89PNG")
            if trickle:  # a byte every 0.1 s keeps each read short, the whole body still is late
                try:
                    for _ in range(30):
                        time.sleep(0.1)
                        s.sendall(b"x")
                except OSError:
                    pass
            data, closed = _read_all(s)
        assert data.startswith(b"HTTP/1.1 408"), data[:200]
        assert b"request body not received within 1 s" in data and b"connection: close" in data.lower()
        assert BODY - 0.1 <= closed - t0 < BODY + 2.0
    _healthy(server)


def test_an_idle_kept_alive_connection_is_closed(server):
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        first = s.recv(65536)
        t0 = time.monotonic()
        assert first.startswith(b"HTTP/1.1 200")
        rest, closed = _read_all(s)  # the server keeps it open for KEEP_ALIVE s, then closes it
    assert KEEP_ALIVE - 0.2 <= closed - t0 < KEEP_ALIVE + 1.5


def test_limits_are_explicit_and_reported(server):
    import httpx

    from ibisagent.app.config import ServeConfig

    c = ServeConfig()
    assert (c.header_timeout_s, c.body_timeout_s, c.keep_alive_s, c.max_connections) == (10.0, 60.0, 5, 256)
    limits = httpx.get(f"http://{server[0]}:{server[1]}/healthz").json()["limits"]
    assert (limits["header_timeout_s"], limits["body_timeout_s"], limits["keep_alive_s"]) == (HEAD, BODY, KEEP_ALIVE)

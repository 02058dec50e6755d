"""One client for OpenAI-compatible chat-completions servers (vLLM, SGLang, OpenAI, a mock).

Used by the `openai:` policy, the query paraphraser (`data.paraphrase`) and the synthesis
teacher (`synth.teacher`). Standard library only.

- Each thread keeps one persistent (keep-alive) HTTP/1.1 connection to the server, so a step
  pays no TCP/TLS set-up; a connection the server closed in the meantime is reopened at once.
- Requests time out (`timeout` s for the connection and for each read); transient failures
  (connection errors, timeouts, HTTP 429/5xx, a reply that is not JSON) are retried `retries`
  times with exponential back-off; a client error (other 4xx) is not retried.
- At most `concurrency` requests are in flight at once across threads.
- After the last try a `ChatServerError` names the URL and the cause.
- HTTP(S)_PROXY / NO_PROXY from the environment are honoured, as urllib would.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
import urllib.request

from ibisagent.errors import IbisInputError


class ChatServerError(IbisInputError):
    """The server could not answer (unreachable, too slow, or an error reply)."""


def base_url(url: str) -> str:
    """'http://h:8000', 'http://h:8000/v1' or '.../v1/chat/completions' -> 'http://h:8000/v1'."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise IbisInputError(url, "the server URL must start with http:// or https://")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


def api_key_from_env(*names: str) -> str | None:
    """The first of the environment variables `names` that is set (default: the usual two)."""
    for name in names or ("IBISAGENT_API_KEY", "OPENAI_API_KEY"):
        if os.environ.get(name):
            return os.environ[name]
    return None


class _Transient(Exception):
    """A failure worth another try; its text is the cause."""


class ChatClient:
    """client = ChatClient("http://localhost:8000/v1"); client.chat({"model": ..., "messages": [...]})."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
    ):
        if retries < 0 or concurrency < 1 or timeout <= 0:
            raise IbisInputError(url, "need retries >= 0, concurrency >= 1 and timeout > 0")
        self.base = base_url(url)
        self.api_key = api_key
        self.timeout, self.retries, self.backoff, self.concurrency = timeout, retries, backoff, concurrency
        self.stats = {"requests": 0, "retries": 0, "failures": 0, "connections": 0}
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._local = threading.local()
        parts = urllib.parse.urlsplit(self.base)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        proxy = urllib.request.getproxies().get(parts.scheme)
        self._proxy = None if not proxy or urllib.request.proxy_bypass(parts.netloc) else urllib.parse.urlsplit(proxy)

    # -- connections ----------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        if self._proxy is None:
            conn = cls(self._host, self._port, timeout=self.timeout)
        elif self._https:  # CONNECT tunnel through the proxy
            conn = cls(self._proxy.hostname, self._proxy.port or 80, timeout=self.timeout)
            conn.set_tunnel(self._host, self._port)
        else:  # plain HTTP proxy: absolute URLs
            conn = http.client.HTTPConnection(self._proxy.hostname, self._proxy.port or 80, timeout=self.timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stall on kept-alive sends
        self.count("connections")
        return conn

    def _target(self, path: str) -> str:
        if self._proxy is not None and not self._https:
            return self.base + path
        return self._prefix + path

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._drop()

    def _once(self, method: str, path: str, data: bytes | None, headers: dict) -> tuple[int, bytes]:
        """One exchange on this thread's connection; a stale kept-alive connection is reopened once."""
        for fresh in (False, True):
            conn = getattr(self._local, "conn", None)
            reused = conn is not None and not fresh
            try:
                if not reused:
                    self._drop()
                    conn = self._local.conn = self._connect()
                conn.request(method, self._target(path), body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if reused:
                    continue  # the server closed an idle keep-alive connection: not a failure
                raise _Transient(str(exc) or type(exc).__name__) from None
            except TimeoutError:
                self._drop()
                raise _Transient(f"no answer within {self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise _Transient(str(exc) or type(exc).__name__) from None
            if resp.will_close:
                self._drop()
            return resp.status, payload
        raise AssertionError("unreachable")

    # -- requests -------------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """JSON request to BASE + `path` with the timeout, bounded retries and the concurrency limit."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base + path
        cause = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.count("retries")
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with self._slots:
                    status, payload = self._once(method, path, data, headers)
            except _Transient as exc:
                cause = str(exc)
                continue
            self.count("requests")
            if status >= 400:
                detail = payload.decode("utf-8", "replace")[:200].strip()
                cause = f"HTTP {status}" + (f": {detail}" if detail else "")
                if status != 429 and status < 500:
                    break  # a client error does not get better by asking again
                continue
            try:
                return json.loads(payload.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                cause = "the reply is not JSON"
        self.count("failures")
        tries = attempt + 1
        raise ChatServerError(url, f"{cause} (after {tries} {'try' if tries == 1 else 'tries'})")

    def count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def models(self) -> list[str]:
        """The model ids the server lists (GET /models)."""
        listing = self.request("GET", "/models")
        data = listing.get("data", []) if isinstance(listing, dict) else []
        return [m["id"] for m in data if isinstance(m, dict) and m.get("id")]

    def chat(self, body: dict) -> tuple[str, str | None]:
        """POST /chat/completions -> (choices[0].message.content or "", finish_reason)."""
        reply = self.request("POST", "/chat/completions", body)
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ChatServerError(self.base, "the reply has no choices[0].message") from None
        return (text if isinstance(text, str) else str(text)), choice.get("finish_reason")

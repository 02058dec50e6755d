"""One JSON-over-HTTP client with the behaviour every remote call of the package needs, on httpx.

Used by the OpenAI-compatible chat client (`chat_client.ChatClient`: the `openai:` policy, the query
paraphraser, the synthesis teacher) and the remote segmentation tool (`tools.remote.RemoteTool`).

- One httpx connection pool per client, kept alive between requests (no TCP/TLS set-up per step);
  httpx drops a connection the server closed while it was idle and opens a new one.
- Each request times out (`timeout` s to connect and for each read); transient failures (connection
  errors, timeouts, HTTP 429/5xx, a reply that is not JSON) are retried `retries` times with
  exponential back-off (`backoff * 2**k` s); a client error (another 4xx) is not retried.
- At most `concurrency` requests are in flight at once across threads.
- After the last try `HttpJsonError` names the URL, the cause, the try count and the HTTP status.
- HTTP(S)_PROXY / NO_PROXY from the environment are honoured (httpx's trust_env).
"""

from __future__ import annotations

import json
import threading
import time

import httpx

from ibisagent.errors import IbisInputError


class HttpJsonError(IbisInputError):
    """The server could not answer (unreachable, too slow, or an error reply); `status` is the
    last HTTP status (None when no reply came)."""

    def __init__(self, what: object, problem: str, status: int | None = None):
        super().__init__(what, problem)
        self.status = status


def check_url(url: str, what: str = "the server URL") -> str:
    """`url` without trailing slashes; a one-line error unless it is http(s)."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise IbisInputError(url, f"{what} must start with http:// or https://")
    return url


def _tries(n: int) -> str:
    return f"after {n} {'try' if n == 1 else 'tries'}"


class JsonHttpClient:
    """client = JsonHttpClient("http://host:8000/v1"); client.request("POST", "/chat/completions", body).

    `stats`: requests (replies received), retries, failures (requests given up), connections
    (TCP connections opened). `error_prefix` starts every failure's message (e.g. "tool server
    failed: "); `error_cls` is the HttpJsonError subclass raised."""

    def __init__(
        self,
        base: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
        error_cls: type[HttpJsonError] = HttpJsonError,
        error_prefix: str = "",
    ):
        if retries < 0 or concurrency < 1 or timeout <= 0:
            raise IbisInputError(base, "need retries >= 0, concurrency >= 1 and timeout > 0")
        self.base = check_url(base)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.error_cls, self.error_prefix = error_cls, error_prefix
        self.stats: dict[str, float] = {"requests": 0, "retries": 0, "failures": 0, "connections": 0}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._http = httpx.Client(
            headers={"Accept": "application/json", **(headers or {})},
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

    def count(self, key: str, value: float = 1) -> None:
        with self._lock:
            self.stats[key] = self.stats.get(key, 0) + value

    def _trace(self, event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete":
            self.count("connections")

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, body: dict | None = None, *, content: bytes | None = None, content_type: str = ""
    ) -> dict:
        """A JSON request to BASE + `path` (`body` as JSON, or raw `content` of `content_type`)
        with the timeout, bounded retries and the concurrency limit -> the reply's JSON."""
        url = self.base + path
        headers = {"Content-Type": content_type or "application/json"}
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
        cause, status, attempt = "no attempt", None, 0
        for attempt in range(self.retries + 1):
            if attempt:
                self.count("retries")
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with self._slots:
                    resp = self._send(method, url, content, headers)
            except httpx.TimeoutException:
                cause, status = f"no answer within {self.timeout:g} s", None
                continue
            except httpx.TransportError as exc:
                cause, status = str(exc) or type(exc).__name__, None
                continue
            self.count("requests")
            status = resp.status_code
            if status >= 400:
                detail = error_detail(resp)
                cause = f"HTTP {status}" + (f": {detail}" if detail else "")
                if status != 429 and status < 500:
                    break  # a client error does not get better by asking again
                continue
            try:
                return resp.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                cause = "the reply is not JSON"
        self.count("failures")
        raise self.error_cls(url, f"{self.error_prefix}{cause} ({_tries(attempt + 1)})", status)

    def _send(self, method: str, url: str, content: bytes | None, headers: dict) -> httpx.Response:
        """One exchange; a connection the server dropped under a request that it never answered
        (RemoteProtocolError: an idle keep-alive closed as we sent) is reopened once at once."""
        for last in (False, True):
            try:
                return self._http.request(
                    method, url, content=content, headers=headers, extensions={"trace": self._trace}
                )
            except httpx.RemoteProtocolError:
                if last:
                    raise
        raise AssertionError("unreachable")


def error_detail(resp: httpx.Response) -> str:
    """The reply's `error` field when it is JSON with one (our server's errors), else its first
    200 characters."""
    try:
        payload = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    return resp.text[:200].strip()

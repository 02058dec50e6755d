"""Who may call the server: an optional bearer token and an Origin check (ASGI middleware).

- Token: when the operator sets one (`serve --token` / IBISAGENT_TOKEN), every request under /v1
  needs `Authorization: Bearer TOKEN` (401 otherwise; compared in constant time). The page, the
  docs and /healthz stay open: they hold no data.
- Origin: a browser adds `Origin` to every cross-origin POST, so a state-changing request (not GET,
  HEAD or OPTIONS) whose Origin is neither the server's own (scheme://Host) nor one of the
  operator's CORS origins is refused with 403: another web page cannot make a visitor's browser
  upload to, or run episodes on, a server it can reach (CSRF, DNS rebinding with the Host check).
  Requests without Origin (curl, Python clients) are not from a browser page and pass.

The Host check itself is starlette's `TrustedHostMiddleware` and CORS its `CORSMiddleware`, off
unless origins are configured (see `ibisagent.app.api.create_app`).
"""

from __future__ import annotations

import hmac
import json

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class AccessGuard:
    """ASGI middleware: bearer token on /v1 (if `token`), same-origin or `origins` for POSTs."""

    def __init__(self, app, token: str | None = None, origins: tuple[str, ...] = ()):
        self.app = app
        self.token = None if not token else f"Bearer {token}".encode()
        self.origins = {o.rstrip("/") for o in origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get(b"origin")
            if origin is not None:
                origin_s = origin.decode("latin-1").rstrip("/")
                own = f"{scope.get('scheme', 'http')}://{headers.get(b'host', b'').decode('latin-1')}"
                if origin_s != own and origin_s not in self.origins and "*" not in self.origins:
                    return await _reply(send, 403, f"cross-origin request from {origin_s[:100]!r} refused")
        if self.token is not None and scope["path"].startswith("/v1"):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.token):
                return await _reply(
                    send,
                    401,
                    "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                    {b"www-authenticate": b"Bearer"},
                )
        return await self.app(scope, receive, send)


async def _reply(send, status: int, message: str, extra: dict[bytes, bytes] | None = None):
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += list((extra or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

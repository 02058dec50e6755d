"""ASGI middleware bounding request bodies in size and time: a body over the limit is refused
with 413 before the application parses any of it, whether or not the client sent Content-Length,
and a body that has not arrived in full within `timeout_s` (a stalled or trickling upload) is
answered 408 and its connection closed."""

from __future__ import annotations

import asyncio
import json


class BodyLimit:
    """Reads at most `max_bytes` of each HTTP request body within `timeout_s`, then replays it to `app`."""

    def __init__(self, app, max_bytes: int, timeout_s: float | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    return await self._refuse(send)
            except ValueError:
                return await self._reply(send, 400, "malformed Content-Length header")
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout_s is None else loop.time() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), None if deadline is None else deadline - loop.time())
            except asyncio.TimeoutError:  # noqa: UP041 (a distinct class before Python 3.11)
                msg = f"request body not received within {self.timeout_s:g} s"
                return await self._reply(send, 408, msg, close=True)
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, send):
        mib = self.max_bytes / (1024 * 1024)
        await self._reply(send, 413, f"request body larger than the {mib:.1f} MiB limit")

    @staticmethod
    async def _reply(send, status: int, message: str, close: bool = False):
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

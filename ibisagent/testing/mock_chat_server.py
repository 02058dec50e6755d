"""A scripted OpenAI-compatible chat server on loopback, for tests, benchmarks and offline demos.

It is a real HTTP server (threads, one per connection) that answers `GET /v1/models` and
`POST /v1/chat/completions`. `reply(body, n) -> str | int | None` decides each answer from the
request body and its 1-based count: a string is the assistant text, an int an HTTP error
status, None a reply with no content. `delay` seconds are slept before each answer (a model's
latency). Requests, the peak number in flight and the decoded images are recorded.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = Callable[[dict, int], "str | int | None"]


class MockChatServer:
    """with MockChatServer(reply) as srv: ... srv.url -> 'http://127.0.0.1:PORT/v1'."""

    def __init__(self, reply: Reply, delay: float = 0.0, model: str = "mock-ibis"):
        self.reply, self.delay, self.model = reply, delay, model
        self.requests: list[dict] = []
        self.in_flight = self.peak = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> MockChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def images(self, request_index: int = -1) -> list:
        """PIL images of the data URLs in one recorded request."""
        from PIL import Image

        out = []
        for m in self.requests[request_index]["messages"]:
            for part in m["content"] if isinstance(m["content"], list) else []:
                if part.get("type") == "image_url":
                    data = part["image_url"]["url"].split(",", 1)[1]
                    out.append(Image.open(io.BytesIO(base64.b64decode(data))))
        return out

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers
            disable_nagle_algorithm = True  # as uvicorn: no delayed-ACK stall between headers and body

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": srv.model, "object": "model"}]})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with srv._lock:
                    srv.requests.append(body)
                    n = len(srv.requests)
                    srv.in_flight += 1
                    srv.peak = max(srv.peak, srv.in_flight)
                try:
                    time.sleep(srv.delay)
                    answer = srv.reply(body, n)
                finally:
                    with srv._lock:
                        srv.in_flight -= 1
                if isinstance(answer, int):
                    self._send(answer, {"error": {"message": f"mock error {answer}"}})
                    return
                choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                self._send(
                    200, {"id": f"mock-{n}", "object": "chat.completion", "model": srv.model, "choices": [choice]}
                )

        return Handler

"""The segmentation tool served over HTTP by `ibisagent serve` ("http://host:port").

`RemoteTool` has the in-process tool's interface (`embed`, `predict`, `mask_to_logits`), so
`IbisEnv`, the rewards (`rewards.StepScorer`, `make_env_reward`), rollouts and the evaluation
harness use it unchanged. Many reward workers can then share one tool server (one model, one
embedding cache):

- `embed(image)` uploads the image once (`POST /v1/images`, lossless PNG) and remembers the
  server's id, its content hash: the same pixels are never uploaded twice by one client;
- `predict(...)` sends all clicks so far (pixels; the server rounds them down to integers), the
  labels, the previous call's `logits_id` (or a mask to start from, as RLE) and an optional box
  to `POST /v1/tool/segment`, and decodes the returned RLE mask (H x W bool);
- the returned `logits` is a `RemoteLogits` handle; it also records how to rebuild those logits,
  so an id that the server has evicted (its LRU) is replayed instead of failing; an image the
  server has evicted is uploaded again.

Transient failures (connection refused or reset, timeouts, HTTP 429 and 5xx) are retried
`retries` times with exponential back-off; then `ToolServerError` names the server and the
cause. A server that is down therefore makes an episode or a reward fail loudly, never score 0.
The HTTP side is `json_http.JsonHttpClient` (httpx), shared with the chat client.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.json_http import HttpJsonError, JsonHttpClient, check_url
from ibisagent.tools.base import Embedding, SegmentationTool, ToolResult


class ToolServerError(HttpJsonError):
    """The tool server could not answer (unreachable, too slow, or an error reply); `status` is
    the last HTTP status."""


@dataclass(frozen=True)
class RemoteImage:
    """`Embedding.features` of the remote tool: the server's image id and the PNG to re-upload."""

    image_id: str
    png: bytes


@dataclass(frozen=True)
class RemoteLogits:
    """A handle on low-res logits held by the server, and how to rebuild them after eviction:
    the call that made them (`points` N x 2 pixels, `labels`, `box`) on top of `parent`, or a
    given mask (`mask_rle`, from `mask_to_logits`) when `logits_id` is None."""

    logits_id: str | None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, ...] | None = None
    parent: RemoteLogits | None = None
    mask_rle: dict | None = None


def png_bytes(image: np.ndarray) -> bytes:
    """H x W x 3 uint8 -> PNG bytes (lossless, fast compression)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass
class RemoteTool(SegmentationTool):
    """Client of an `ibisagent serve` tool server at `url` (e.g. "http://10.0.0.5:8000").

    timeout: seconds per HTTP request; retries: extra tries after a transient failure, with
    `backoff * 2**k` s pauses; concurrency: requests in flight at once from this client (threads);
    check: ask `GET /healthz` at construction, so a wrong URL fails at once. token: the server's
    bearer token (`serve --token`), by default $IBISAGENT_TOKEN; sent as `Authorization: Bearer`.
    """

    url: str = "http://127.0.0.1:8000"
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5
    concurrency: int = 8
    check: bool = True
    token: str | None = field(default=None, repr=False)
    stats: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.url = check_url(self.url, "the tool server URL")
        token = self.token or os.environ.get("IBISAGENT_TOKEN")
        self._http = JsonHttpClient(
            self.url,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            timeout=self.timeout,
            retries=self.retries,
            backoff=self.backoff,
            concurrency=self.concurrency,
            error_cls=ToolServerError,
            error_prefix="tool server failed: ",
        )
        self.stats = self._http.stats  # requests, retries, failures, connections, and the counts below
        self.stats.update(uploads=0, reuploads=0, replays=0, server_tool_ms=0.0)
        self.server_tool = "?"
        if self.check:
            self.server_tool = str(self.health().get("tool", "?"))
        self.name = f"remote[{self.url},{self.server_tool}]"

    # -- HTTP ---------------------------------------------------------------------------
    def _count(self, key: str, value: float = 1) -> None:
        self._http.count(key, value)

    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> dict:
        """One JSON exchange with timeout, bounded retries and the concurrency limit."""
        return self._http.request(method, path, content=body, content_type=ctype)

    def health(self) -> dict:
        """The server's `GET /healthz` (tool name, cache state, limits)."""
        return self._request("GET", "/healthz")

    # -- the tool interface ---------------------------------------------------------------
    def _upload(self, png: bytes) -> dict:
        self._count("uploads")
        return self._request("POST", "/v1/images", png, "image/png")

    def _encode(self, image: np.ndarray, key: str) -> Embedding:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise IbisInputError("image", f"expected H x W x 3 uint8, got {image.shape} {image.dtype}")
        png = png_bytes(image)
        info = self._upload(png)
        H, W = image.shape[:2]
        if (info.get("height"), info.get("width")) != (H, W):
            raise ToolServerError(self.url, f"the server read the image as {info.get('width')} x {info.get('height')}")
        return Embedding(key=key, features=RemoteImage(info["image_id"], png), original_size=(H, W), input_size=(H, W))

    def mask_to_logits(self, emb: Embedding, mask: np.ndarray) -> RemoteLogits:
        """A given mask as the prior of the next call: the server turns it into logits there."""
        from ibisagent.io.rle import rle_encode

        mask = np.asarray(mask, bool)
        if mask.shape != tuple(emb.original_size):
            raise ValueError(f"mask is {mask.shape} but the image is {tuple(emb.original_size)}")
        return RemoteLogits(logits_id=None, mask_rle=rle_encode(mask))

    def _decode(self, emb: Embedding, points, labels, prev_logits, box) -> ToolResult:
        if prev_logits is not None and not isinstance(prev_logits, RemoteLogits):
            raise TypeError("the remote tool's prior must be a RemoteLogits from this tool")
        box_t = None if box is None else tuple(float(v) for v in np.asarray(box, np.float32).reshape(4))
        pts = tuple((float(x), float(y)) for x, y in np.asarray(points, np.float32).reshape(-1, 2))
        lab = tuple(int(v) for v in np.asarray(labels).reshape(-1))
        return self._call(emb, pts, lab, box_t, prev_logits)

    def _call(self, emb: Embedding, pts, lab, box, prev: RemoteLogits | None, recover: int = 3) -> ToolResult:
        """POST /v1/tool/segment; an evicted image is uploaded again and evicted logits replayed
        (at most `recover` retries of this call, so a server that keeps evicting fails loudly)."""
        from ibisagent.io.rle import rle_decode

        img: RemoteImage = emb.features
        body: dict[str, Any] = {"image_id": img.image_id, "points": pts, "labels": lab, "coords": "px"}
        if box is not None:
            body["box"] = box
        if prev is not None and prev.logits_id is not None:
            body["prev_logits_id"] = prev.logits_id
        elif prev is not None and prev.mask_rle is not None:
            body["prev_mask"] = prev.mask_rle
        try:
            out = self._http.request("POST", "/v1/tool/segment", body)
        except ToolServerError as exc:
            if recover <= 0 or exc.status != 404:
                raise
            if "image_id" in exc.problem and "logits" not in exc.problem:
                self._count("reuploads")
                emb.features = RemoteImage(self._upload(img.png)["image_id"], img.png)
                return self._call(emb, pts, lab, box, prev, recover - 1)
            if "prev_logits_id" in exc.problem and prev is not None:
                self._count("replays")
                rebuilt = self._call(emb, prev.points, prev.labels, prev.box, prev.parent).logits  # finite chain
                return self._call(emb, pts, lab, box, rebuilt, recover - 1)
            raise
        self._count("server_tool_ms", float(out.get("tool_ms") or 0.0))
        mask = rle_decode(out["mask"]["rle"])
        if mask.shape != tuple(emb.original_size):
            raise ToolServerError(self.url, f"mask of shape {mask.shape} for an image of {tuple(emb.original_size)}")
        logits = RemoteLogits(out.get("logits_id"), pts, lab, box, prev)
        score = out.get("score")
        return ToolResult(mask=mask, logits=logits, score=0.0 if score is None else float(score))

"""A policy served over HTTP by any OpenAI-compatible chat-completions server ("openai:URL[#model]").

A user serves the released weights with vLLM on a GPU (docs/vlm.md) and points ibisagent at the
URL. Each step sends the released prompt (`vlm_chat.episode_chat`) with the image as a PNG data
URL (capped at 512 x 512 pixels). The HTTP side is `ibisagent.chat_client.ChatClient`: requests
time out (`timeout` s), transient failures (connection errors, timeouts, HTTP 429/5xx) are retried
`retries` times with exponential back-off, at most `concurrency` requests are in flight at once
across threads, and each thread keeps its connection alive between steps. After the last try a
`PolicyServerError` names the server and the cause; callers keep what they have so far.

The policy's own cost per step is small beside any model's (bench/bench_vlm.py): the PNG is
written with fast zlib settings and as one grey channel when the three are equal (a CT or MR slice
before any mask: lossless, a third of the bytes), and data URLs are cached by image content, so a
history-on step encodes only its new image.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ibisagent.chat_client import ChatClient, ChatServerError, api_key_from_env, base_url
from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.policies.base import Policy
from ibisagent.policies.vlm_chat import MAX_PIXELS, episode_chat

PolicyServerError = ChatServerError  # the name callers catch
__all__ = ["OpenAIPolicy", "PolicyServerError", "base_url", "png_data_url", "to_openai_messages"]


def png_bytes(image) -> bytes:
    """Lossless PNG of a PIL image or H x W (x 3) uint8 array, zlib level 1: one grey channel with
    run-length matching when R = G = B (a third of the bytes, about 3x faster than PIL on a CT
    slice), else RGB (about as fast as PIL's level 1)."""
    import cv2

    a = np.asarray(image, np.uint8)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if a.ndim == 3 and a.shape[2] == 3:
        if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
            a = a[..., 0]
        else:
            a = a[..., ::-1]  # cv2 writes BGR
    if a.ndim == 2:
        params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a), params)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


class _DataURLCache:
    """Data URLs of the last `size` images, keyed by their pixels (thread-safe)."""

    def __init__(self, size: int = 64):
        self.size, self._urls, self._lock = size, OrderedDict(), threading.Lock()
        self.hits = self.misses = 0

    def __call__(self, image) -> str:
        a = np.ascontiguousarray(np.asarray(image, np.uint8))
        key = (a.shape, hashlib.blake2b(a.data, digest_size=16).digest())
        with self._lock:
            url = self._urls.get(key)
            if url is not None:
                self._urls.move_to_end(key)
                self.hits += 1
                return url
        url = "data:image/png;base64," + base64.b64encode(png_bytes(a)).decode("ascii")
        with self._lock:
            self.misses += 1
            self._urls[key] = url
            while len(self._urls) > self.size:
                self._urls.popitem(last=False)
        return url


def png_data_url(image) -> str:
    """`data:image/png;base64,...` of a PIL image or uint8 array (see `png_bytes`)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def to_openai_messages(messages: list[dict], images: list, data_url=png_data_url) -> list[dict]:
    """HF-layout messages + PIL images -> OpenAI chat messages (images as data URLs, in order)."""
    out, it = [], iter(images)
    for m in messages:
        if m["role"] != "user":
            out.append({"role": m["role"], "content": "".join(c["text"] for c in m["content"] if c["type"] == "text")})
            continue
        parts = []
        for c in m["content"]:
            if c["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": data_url(next(it))}})
            else:
                parts.append({"type": "text", "text": c["text"]})
        out.append({"role": "user", "content": parts})
    return out


class OpenAIPolicy(Policy):
    """Asks an OpenAI-compatible server for each assistant turn.

    temperature 0 = greedy (as released). `model` None: the first model the server lists.
    api_key: sent as a Bearer token (default from $IBISAGENT_API_KEY or $OPENAI_API_KEY).
    """

    name = "openai"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        history: bool = False,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 512,
        max_pixels: int = MAX_PIXELS,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
        seed: int | None = None,
    ):
        self.client = ChatClient(
            url,
            api_key=api_key or api_key_from_env(),
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            concurrency=concurrency,
        )
        self.base, self.model, self.concurrency = self.client.base, model, concurrency
        self.history, self.temperature, self.top_p = history, temperature, top_p
        self.max_tokens, self.max_pixels, self.seed = max_tokens, max_pixels, seed
        self.client.stats.update(truncated=0, empty=0)
        self.stats = self.client.stats  # requests, retries, failures, connections, truncated, empty
        self.data_url = _DataURLCache()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def resolve_model(self) -> str:
        """The model name to ask for: the given one, else the first the server lists."""
        if self.model is None:
            models = self.client.models()
            if not models:
                raise PolicyServerError(self.base + "/models", "the server lists no model; use openai:URL#MODEL")
            self.model = models[0]
        return self.model

    # -- policy -------------------------------------------------------------------------
    def request_body(self, obs: Observation, episode: Episode) -> dict:
        messages, images = episode_chat(
            obs.original, episode, history=self.history, max_pixels=self.max_pixels, current=(obs.image, obs.text)
        )
        body = {
            "model": self.resolve_model(),
            "messages": to_openai_messages(messages, images, self.data_url),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.seed is not None:
            body["seed"] = self.seed + len(episode.steps)
        return body

    def act(self, obs: Observation, episode: Episode) -> str:
        text, finish = self.client.chat(self.request_body(obs, episode))
        if finish == "length":
            self.client.count("truncated")
        if not text.strip():
            self.client.count("empty")
        return text

    def act_batch(self, items: list[tuple[Observation, Episode]]) -> list[str]:
        """Concurrent requests (at most `concurrency` in flight); order kept. The first failure raises."""
        if len(items) <= 1:
            return [self.act(o, e) for o, e in items]
        with self._pool_lock:  # one pool for the policy's life: its threads keep their connections
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-policy")
        return list(self._pool.map(lambda it: self.act(*it), items))

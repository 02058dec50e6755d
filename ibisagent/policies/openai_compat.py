"""A policy served over HTTP by any OpenAI-compatible chat-completions server ("openai:URL[#model]").

A user serves the released weights with vLLM on a GPU (docs/vlm.md) and points ibisagent at the
URL. Each step sends the released prompt (`vlm_chat.episode_chat`) with the image as a PNG data
URL (capped at 512 x 512 pixels). Requests time out (`timeout` s), transient failures
(connection errors, timeouts, HTTP 429/5xx) are retried `retries` times with exponential
back-off, and at most `concurrency` requests are in flight at once across threads. After the last
try a `PolicyServerError` names the server and the cause; callers keep what they have so far.
Only the Python standard library is used.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.errors import IbisInputError
from ibisagent.policies.base import Policy
from ibisagent.policies.vlm_chat import MAX_PIXELS, episode_chat


class PolicyServerError(IbisInputError):
    """The model server could not answer (unreachable, too slow, or an error reply)."""


def base_url(url: str) -> str:
    """'http://h:8000', 'http://h:8000/v1' or '.../v1/chat/completions' -> 'http://h:8000/v1'."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise IbisInputError(url, "the server URL must start with http:// or https://")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


def png_data_url(pil_image) -> str:
    buf = io.BytesIO()
    pil_image.save(buf, format="PNG", compress_level=1)  # fast; lossless either way
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def to_openai_messages(messages: list[dict], images: list) -> list[dict]:
    """HF-layout messages + PIL images -> OpenAI chat messages (images as data URLs, in order)."""
    out, it = [], iter(images)
    for m in messages:
        if m["role"] != "user":
            out.append({"role": m["role"], "content": "".join(c["text"] for c in m["content"] if c["type"] == "text")})
            continue
        parts = []
        for c in m["content"]:
            if c["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(next(it))}})
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
        if retries < 0 or concurrency < 1 or timeout <= 0:
            raise IbisInputError(url, "need retries >= 0, concurrency >= 1 and timeout > 0")
        self.base = base_url(url)
        self.model = model
        self.api_key = api_key or os.environ.get("IBISAGENT_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.history, self.temperature, self.top_p = history, temperature, top_p
        self.max_tokens, self.max_pixels, self.seed = max_tokens, max_pixels, seed
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self.stats = {"requests": 0, "retries": 0, "failures": 0, "truncated": 0, "empty": 0}
        self._lock = threading.Lock()

    # -- HTTP ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        """JSON request with timeout, bounded retries and the concurrency limit."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base + path
        cause = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with self._slots, urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    self._count("requests")
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200].strip()
                cause = f"HTTP {exc.code}" + (f": {detail}" if detail else "")
                if exc.code != 429 and exc.code < 500:
                    break  # a client error does not get better by asking again
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                cause = f"no answer within {self.timeout:g} s" if "timed out" in str(reason) else str(reason)
            except (json.JSONDecodeError, UnicodeDecodeError):
                cause = "the reply is not JSON"
        self._count("failures")
        tries = attempt + 1
        raise PolicyServerError(url, f"{cause} (after {tries} {'try' if tries == 1 else 'tries'})")

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def resolve_model(self) -> str:
        """The model name to ask for: the given one, else the first the server lists."""
        if self.model is None:
            listing = self._request("GET", "/models")
            models = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
            if not models or not models[0]:
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
            "messages": to_openai_messages(messages, images),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if self.seed is not None:
            body["seed"] = self.seed + len(episode.steps)
        return body

    def act(self, obs: Observation, episode: Episode) -> str:
        reply = self._request("POST", "/chat/completions", self.request_body(obs, episode))
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise PolicyServerError(self.base, "the reply has no choices[0].message") from None
        if choice.get("finish_reason") == "length":
            self._count("truncated")
        if not text.strip():
            self._count("empty")
        return text if isinstance(text, str) else str(text)

    def act_batch(self, items: list[tuple[Observation, Episode]]) -> list[str]:
        """Concurrent requests (at most `concurrency` in flight); order kept. The first failure raises."""
        if len(items) <= 1:
            return [self.act(o, e) for o, e in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(lambda it: self.act(*it), items))

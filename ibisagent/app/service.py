"""The server's work, independent of HTTP: images, tool calls and agent episodes.

One `SegmentationTool` serves every request. It is not thread-safe, so every call into it goes
through `SerialTool`, which holds a lock for the duration of one embed/predict call (not for a
whole episode: a person's click is answered between an agent's steps). Request concurrency is
bounded by `Slots` (an asyncio semaphore plus a cap on waiters).

Deadlines: every tool call and every agent episode (policy calls included) runs under a deadline
(`call_with_deadline`): past it the request's worker is freed and answers (429 for a tool call,
stop_reason "timeout" for an episode) while the stuck call finishes on its own thread; episodes
still finishing that way count against the workers, so they cannot pile up.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ibisagent.app.codec import VOLUME_KINDS, decode_image, decode_mask, mask_out, step_out
from ibisagent.app.config import ServeConfig
from ibisagent.app.errors import bad_request, busy, not_found, unsupported
from ibisagent.app.schemas import SegmentRequest, SliceRequest, ToolRequest, VolumeMaskRequest
from ibisagent.app.store import ImageStore, LogitsStore, StoredImage
from ibisagent.app.volumes import VolumeStore, load_volume_upload, slice_mask_nifti, slice_rgb
from ibisagent.errors import IbisInputError
from ibisagent.tools.base import SegmentationTool


class DeadlineExceeded(Exception):
    """A call did not finish within its deadline (it goes on in its own thread)."""


def call_with_deadline(fn, timeout_s: float, *args):
    """`fn(*args)` on a daemon thread; its result (or exception) if it ends within `timeout_s`
    seconds, else DeadlineExceeded while it runs on. Python cannot stop a thread: the caller
    frees its own worker, and `fn` must release what it holds when it ends."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="ibis-deadline", daemon=True).start()
    if not done.wait(max(0.0, timeout_s)):
        raise DeadlineExceeded
    if "error" in box:
        raise box["error"]
    return box["value"]


class SerialTool:
    """The tool's embed / predict / mask_to_logits, one call at a time (a lock with a timeout
    `timeout_s`) and each within `call_timeout_s` (else 429; the lock is held until it ends)."""

    def __init__(self, tool: SegmentationTool, timeout_s: float, call_timeout_s: float | None = None):
        self.tool = tool
        self.name = tool.name
        self.embedding_kind = tool.embedding_kind  # what policies reading embeddings ask for
        self._lock = threading.Lock()
        self._timeout_s = timeout_s
        self._call_timeout_s = call_timeout_s

    def _locked(self, fn, *args):
        if not self._lock.acquire(timeout=self._timeout_s):
            raise busy(f"the segmentation tool stayed busy for {self._timeout_s:.0f} s; retry later", 2)
        if self._call_timeout_s is None:
            try:
                return fn(*args)
            finally:
                self._lock.release()

        def run():
            try:
                return fn(*args)
            finally:
                self._lock.release()

        try:
            return call_with_deadline(run, self._call_timeout_s)
        except DeadlineExceeded:
            raise busy(
                f"a segmentation tool call took longer than {self._call_timeout_s:g} s; retry later", 5
            ) from None

    def embed(self, image: np.ndarray):
        return self._locked(self.tool.embed, image)

    def encode(self, image: np.ndarray):
        """Features for training (`train.embedding_cache.embed_images`): the memory cache's when
        the image was uploaded (the same features), else encoded without filling the cache."""
        from ibisagent.tools.base import image_key

        emb = self.tool.cache.get(image_key(image))
        return emb if emb is not None else self._locked(self.tool.encode, image)

    def predict(self, emb, points=None, labels=None, prev_logits=None, box=None):
        return self._locked(self.tool.predict, emb, points, labels, prev_logits, box)

    def mask_to_logits(self, emb, mask: np.ndarray):
        return self._locked(self.tool.mask_to_logits, emb, mask)


class Slots:
    """At most `workers` requests working at once and at most `max_queue` waiting; a request that
    would wait beyond that, or longer than `timeout_s`, gets 429."""

    def __init__(self, workers: int, max_queue: int, timeout_s: float):
        self.workers, self.max_queue, self.timeout_s = max(1, workers), max(0, max_queue), timeout_s
        self._sem: asyncio.Semaphore | None = None
        self.waiting = 0

    async def run(self, fn, *args):
        """Run the blocking `fn(*args)` in a worker thread once a slot is free."""
        import anyio.to_thread

        if self._sem is None:
            self._sem = asyncio.Semaphore(self.workers)
        if self.waiting >= self.max_queue and self._sem.locked():
            raise busy(f"server busy ({self.waiting} requests waiting); retry later")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), self.timeout_s)
        except asyncio.TimeoutError:
            raise busy(f"no free worker within {self.timeout_s:.0f} s; retry later", 2) from None
        finally:
            self.waiting -= 1
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self._sem.release()


class _EpisodeTimeout(Exception):
    pass


def _snapshot_episode(episode):
    """A copy of an episode that another thread may still be stepping (its steps so far)."""
    import copy

    snap = copy.copy(episode)
    snap.steps, snap.meta = list(episode.steps), dict(episode.meta)
    return snap


class Service:
    """Images, tool calls and episodes on one tool, within the limits of `config`."""

    def __init__(self, config: ServeConfig, tool: SegmentationTool | None = None):
        from ibisagent.app.policies import PolicyRegistry

        config.check()
        self.config = config
        self.policies = PolicyRegistry(config.policies, config.policy_options)
        if tool is None:
            from ibisagent.tools import make_tool

            kwargs: dict[str, Any] = {"cache_entries": config.max_images}
            if config.tool.startswith("litemedsam"):
                kwargs.update(strategy=config.strategy, update=config.update, threads=config.threads)
            tool = make_tool(config.tool, **kwargs)
        self.tool = tool
        self.serial = SerialTool(tool, config.queue_timeout_s, config.tool_timeout_s)
        self.images = ImageStore(config.max_images, config.max_image_bytes)
        self.logits = LogitsStore(config.max_logits, config.max_logits_bytes)
        self.volumes = VolumeStore(config.max_volumes, config.max_volume_bytes)
        self.slots = Slots(config.workers, config.max_queue, config.queue_timeout_s)
        from ibisagent.app.sessions import Sessions

        self.sessions = Sessions(
            self, config.max_sessions, config.max_clicks, config.max_session_bytes, config.max_sessions_bytes
        )
        self._overdue = 0  # episodes past their deadline still running on their threads
        self._overdue_lock = threading.Lock()

    def memory(self) -> dict[str, int]:
        """Bytes held now per store (embeddings and taught policies estimated) and their total, with the bound."""
        from ibisagent.app.config import EMBEDDING_BYTES, POLICY_BYTES

        held = {
            "images": self.images.nbytes,
            "embeddings": len(self.tool.cache) * EMBEDDING_BYTES,
            "volumes": self.volumes.nbytes,
            "logits": self.logits.nbytes,
            "sessions": self.sessions.nbytes,
            "taught": sum(self.policies.instances(n) for n in self.policies.taught) * POLICY_BYTES,
        }
        return {**held, "total": sum(held.values()), "bound": self.config.memory_budget()["total"]}

    # -- images -----------------------------------------------------------------------
    def add_image(self, data: bytes, name: str) -> dict:
        """Decode, store and embed an upload (the embedding is cached by content hash)."""
        return self._store(decode_image(data, name or "image", self.config.max_pixels), name or "image")

    def _store(self, image: np.ndarray, name: str) -> dict:
        """Store an H x W x 3 uint8 image under its content hash and compute its embedding once."""
        item = self.images.add(image, name)
        hits = self.tool.timings.cache_hits
        t0 = time.perf_counter()
        self.serial.embed(item.image)
        H, W = item.shape
        return {
            "image_id": item.id,
            "width": W,
            "height": H,
            "name": item.name,
            "embed_ms": 1000 * (time.perf_counter() - t0),
            "cached": self.tool.timings.cache_hits > hits,
        }

    def resolve_image(self, image_id: str | None, upload: bytes | None, name: str = "image") -> StoredImage:
        if upload is not None:
            info = self.add_image(upload, name)
            return self.images.get(info["image_id"])
        if not image_id:
            raise bad_request("give an image: image_id (from POST /v1/images) or an `image` file upload")
        item = self.images.get(image_id)
        if item is None:
            raise not_found(f"unknown or expired image_id {image_id[:64]!r}; upload the image again")
        return item

    def _mask(self, value, item: StoredImage, what: str) -> np.ndarray | None:
        if value is None:
            return None
        return decode_mask(value, item.shape, what, self.config.max_pixels)

    def mask_rle(self, image_id: str, data: bytes) -> dict:
        """A mask file for an uploaded image -> {"image_id", "area", "rle"} (checked: same size)."""
        from ibisagent.io.rle import rle_encode

        item = self.resolve_image(image_id, None)
        mask = decode_mask(data, item.shape, "mask", self.config.max_pixels)
        return {"image_id": item.id, "area": int(np.count_nonzero(mask)), "rle": rle_encode(mask)}

    # -- volumes ----------------------------------------------------------------------
    def add_volume(self, data: bytes, name: str) -> dict:
        """A NIfTI file or one DICOM file -> volume id, slice counts per axis, window choices."""
        from ibisagent.app.codec import sniff

        kind = sniff(data) if data else None
        if kind not in VOLUME_KINDS:
            raise unsupported(f"{name}: not a NIfTI (.nii, .nii.gz) or DICOM file")
        return self.store_volume(load_volume_upload(data, name, kind, self.config.max_volume_bytes), data, name)

    def store_volume(self, vol, data: bytes, name: str) -> dict:
        """Keep a loaded volume (its upload `data` counts against the volume store's bytes) -> its id,
        shape, slice counts per axis and window choices, as the API answers."""
        from ibisagent.data.volume_io import AXES
        from ibisagent.data.windowing import WINDOW_CHOICES

        item = self.volumes.add(vol, data, name)
        return {
            "volume_id": item.id,
            "name": name,
            "shape": list(vol.native_shape),
            "slices": {axis: vol.n_slices(axis) for axis in AXES},
            "windows": list(WINDOW_CHOICES),
            "modality": vol.modality,
        }

    def _volume(self, volume_id: str):
        item = self.volumes.get(volume_id)
        if item is None:
            raise not_found(f"unknown or expired volume_id {volume_id[:64]!r}; upload the volume again")
        return item

    def _slice_index(self, vol, req: SliceRequest) -> int:
        n = vol.n_slices(req.axis)
        k = n // 2 if req.index is None else req.index
        if not 0 <= k < n:
            raise bad_request(f"slice {k} outside 0..{n - 1} along {req.axis}")
        return k

    def volume_slice(self, volume_id: str, req: SliceRequest) -> dict:
        """Window a slice to RGB, store and embed it like an uploaded image."""
        item = self._volume(volume_id)
        k = self._slice_index(item.volume, req)
        rgb = slice_rgb(item.volume, req.axis, k, req.window)
        name = f"{Path(item.name).name.split('.')[0]}_{req.axis}{k:03d}"
        return {**self._store(rgb, name), "axis": req.axis, "index": k, "window": req.window}

    def volume_mask(self, volume_id: str, req: VolumeMaskRequest) -> bytes:
        """The slice's mask as .nii.gz bytes on the input volume's grid and affine."""
        item = self._volume(volume_id)
        k = self._slice_index(item.volume, req)
        shape = item.volume.plane(req.axis, k).shape
        mask = decode_mask(req.mask, shape, "mask", self.config.max_pixels)
        return slice_mask_nifti(item.volume, req.axis, k, mask, req.window)

    # -- one tool call ----------------------------------------------------------------
    def tool_call(self, req: ToolRequest, files: dict[str, bytes]) -> dict:
        """All clicks so far (+ the previous logits or mask, + an optional box) -> the new mask."""
        from ibisagent.geometry import to_pixels
        from ibisagent.metrics import iou

        t0 = time.perf_counter()
        item = self.resolve_image(req.image_id, files.get("image"), files.get("image_name", "image"))
        H, W = item.shape
        if len(req.points) != len(req.labels):
            raise bad_request(f"{len(req.points)} points but {len(req.labels)} labels")
        if len(req.points) > self.config.max_clicks:
            raise bad_request(f"{len(req.points)} clicks; the limit is {self.config.max_clicks}")
        if any(lab not in (0, 1) for lab in req.labels):
            raise bad_request("labels must be 1 (positive) or 0 (negative)")
        px = [(int(x), int(y)) for x, y in to_pixels(list(req.points), W, H, req.coords)]
        clicks = [(x, y, lab) for (x, y), lab in zip(px, req.labels)]
        prev_mask = self._mask(files.get("prev_mask", req.prev_mask), item, "prev_mask")
        ref = self._mask(files.get("reference_mask", req.reference_mask), item, "reference_mask")
        prev_logits = None
        if req.prev_logits_id:
            state = self.logits.get(req.prev_logits_id)
            if state is None:
                raise not_found(f"unknown or expired prev_logits_id {req.prev_logits_id[:64]!r}; send prev_mask")
            if state.image_id != item.id:
                raise bad_request("prev_logits_id belongs to another image")
            prev_logits = state.logits
        emb = self.serial.embed(item.image)
        if prev_logits is None and prev_mask is not None and prev_mask.any():
            prev_logits = self.serial.mask_to_logits(emb, prev_mask)
        t1 = time.perf_counter()
        box = None if req.box is None else np.asarray(req.box, np.float32)
        if box is not None and not (np.isfinite(box).all() and box[0] <= box[2] and box[1] <= box[3]):
            raise bad_request("box must be finite [x0, y0, x1, y1] pixels with x0 <= x1 and y0 <= y1")
        if clicks or box is not None:
            pts = np.array(px, np.float32).reshape(-1, 2)
            out = self.serial.predict(emb, pts, np.array(req.labels, np.int64), prev_logits, box)
            mask, logits, score = out.mask, out.logits, out.score
        else:  # nothing to add: the given mask stands (an empty one without a prior)
            mask, logits, score = (prev_mask if prev_mask is not None else np.zeros((H, W), bool)), prev_logits, None
        tool_ms = 1000 * (time.perf_counter() - t1)
        return {
            "image_id": item.id,
            "mask": mask_out(mask, req.outputs, item.image, clicks),
            "score": score,
            "iou": None if ref is None else iou(mask, ref),
            "clicks": clicks,
            "logits_id": None if logits is None else self.logits.add(item.id, logits),
            "tool_ms": tool_ms,
            "total_ms": 1000 * (time.perf_counter() - t0),
        }

    # -- an agent episode -------------------------------------------------------------
    def segment(self, req: SegmentRequest, files: dict[str, bytes]) -> dict:
        """Run a policy on the image until it stops (or `max_steps` / the episode timeout)."""
        from ibisagent.env import IbisEnv
        from ibisagent.metrics import iou
        from ibisagent.policies.runner import run_episode

        t0 = time.perf_counter()
        item = self.resolve_image(req.image_id, files.get("image"), files.get("image_name", "image"))
        ref = self._mask(files.get("reference_mask", req.reference_mask), item, "reference_mask")
        init = self._mask(files.get("init_mask", req.init_mask), item, "init_mask")
        name = self.policies.resolve(req.policy)
        if self.policies.specs[name].partition(":")[0] in ("oracle", "box") and ref is None:
            raise bad_request(f"policy {name!r} needs a reference mask (reference_mask)")
        with self._overdue_lock:
            if self._overdue >= self.config.workers:
                raise busy(f"{self._overdue} episodes past their deadline are still finishing; retry later", 5)
        max_steps = min(req.max_steps or self.config.max_steps, self.config.max_steps)
        env = IbisEnv(self.serial, max_steps=max_steps)
        deadline = t0 + self.config.episode_timeout_s
        cancelled = threading.Event()

        def on_step(obs, reward, info):
            if cancelled.is_set() or time.perf_counter() > deadline:
                raise _EpisodeTimeout

        with self.policies.borrow(name, req.policy_options) as lease:
            if lease.policy.needs_reference and ref is None:
                raise bad_request(f"policy {name!r} needs a reference mask (reference_mask)")

            finished = threading.Event()

            def play():
                try:
                    return run_episode(env, lease.policy, item.image, req.query, ref, init, item.name, on_step)
                except _EpisodeTimeout:
                    env.episode.stop_reason = "timeout"
                    return env.episode
                finally:
                    with self._overdue_lock:
                        finished.set()
                        if lease.abandoned:
                            self._overdue -= 1

            overdue = False
            try:
                episode = call_with_deadline(play, deadline - time.perf_counter())
            except DeadlineExceeded:  # stuck inside a policy or tool call: answer with the steps so far
                cancelled.set()
                with self._overdue_lock:
                    if not finished.is_set():  # (else it ended just now: nothing left running)
                        lease.abandoned = True
                        self._overdue += 1
                episode, overdue = _snapshot_episode(env.episode), True
                episode.stop_reason = "timeout"
            except IbisInputError as exc:
                raise bad_request(f"policy {name!r}: {exc}") from None
            except ValueError as exc:  # a policy refusing its inputs (e.g. shapes); the tool's own errors
                raise bad_request(f"policy {name!r}: {exc}") from None
        episode.meta.update(policy=name, tool=self.tool.name, image_id=item.id)
        final = episode.final_mask
        logits_id = None if overdue or env.logits is None else self.logits.add(item.id, env.logits)
        steps = self._steps(episode, item.image, req.step_overlays)
        clicks = episode.clicks
        result = {
            "image_id": item.id,
            "query": req.query,
            "policy": name,
            "stop_reason": episode.stop_reason,
            "answer": episode.answer,
            "steps": steps,
            "mask": mask_out(final, req.outputs, item.image, clicks),
            "iou": None if ref is None else iou(final, ref),
            "clicks": clicks,
            "logits_id": logits_id,
            "episode": episode.to_dict(),
        }
        # a person may continue this episode: its environment becomes an interactive session
        # (not one still being stepped by an episode past its deadline)
        result["session_id"] = None if overdue else self.sessions.adopt(env, item.id, init)
        result["total_ms"] = 1000 * (time.perf_counter() - t0)
        return result

    @staticmethod
    def _steps(episode, image: np.ndarray, overlays: bool) -> list[dict]:
        from ibisagent.env.episode import Episode

        steps, shown = [], Episode(query=episode.query, image_size=episode.image_size, init_mask=episode.init_mask)
        for rec in episode.steps:
            shown.steps.append(rec)
            mask = shown.final_mask
            step = step_out(rec, int(np.count_nonzero(mask)))
            if overlays:
                step["overlay"] = mask_out(mask, ["overlay"], image, shown.clicks)["overlay"]
            steps.append(step)
        return steps

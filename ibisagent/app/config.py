"""Server settings: limits on uploads, memory, concurrency and time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """Limits of the web app / REST server. Sizes in bytes, pixels or entries; times in seconds.

    tool: the segmentation tool spec (see `ibisagent.tools.make_tool`); strategy: its prompt strategy.
    max_upload_bytes: the largest request body accepted (the whole multipart/JSON body).
    max_pixels: the largest image accepted, width x height.
    max_images / max_image_bytes: the image store's bounds (least recently used images are dropped).
    max_volumes / max_volume_bytes: the volume store's bounds; one volume larger than max_volume_bytes
      (voxels as loaded, read from the header) is refused with 413.
    max_logits: how many previous-logits states are kept for `prev_logits_id` (LRU).
    workers: requests working at once (decoding, encoding, waiting for the tool); the tool itself
      runs one call at a time behind a lock. max_queue: requests allowed to wait for a worker slot
      beyond that; more are refused with 429. queue_timeout_s: the longest wait for a slot or the tool.
    episode_timeout_s: an agent episode past this wall time stops with stop_reason "timeout".
    max_steps: the most steps an agent episode may take (requests may ask for fewer).
    max_sessions: interactive sessions kept (LRU; each is an episode a person clicks in, up to
      max_clicks person steps).
    header_timeout_s: a connection must send a complete request head within this time (else closed).
    body_timeout_s: a request body must arrive in full within this time (else 408).
    keep_alive_s: an idle kept-alive connection is closed after this time.
    max_connections: open connections + requests in progress; beyond it the server answers 503.
    (The HTTP-level limits are applied by `ibisagent.app.server.uvicorn_config`.)
    """

    tool: str = "litemedsam"
    strategy: str = "points+prior"
    threads: int | None = None
    max_upload_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    max_images: int = 32
    max_image_bytes: int = 1024 * 1024 * 1024
    max_logits: int = 256
    max_volumes: int = 4
    max_volume_bytes: int = 1024 * 1024 * 1024
    workers: int = 4
    max_queue: int = 64
    queue_timeout_s: float = 30.0
    episode_timeout_s: float = 60.0
    max_steps: int = 20
    max_clicks: int = 64
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: int = 5
    max_connections: int = 256
    max_sessions: int = 64

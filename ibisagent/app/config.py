"""Server settings: limits on uploads, memory, concurrency and time; who may call it and what it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ibisagent.train.compact.teach import TeachConfig

MiB = 1024 * 1024
EMBEDDING_BYTES = 4 * MiB  # one cached LiteMedSAM image embedding (256 x 64 x 64 float32)
# one loaded compact policy instance: its belief net and known-query embeddings as float32 (about
# 4 MiB for the shipped weights, which a taught policy keeps the size of) plus the click-prefix
# logits (256 x 256 float32 per step) it keeps between episodes
POLICY_BYTES = 8 * MiB


@dataclass
class ServeConfig:
    """Limits of the web app / REST server. Sizes in bytes, pixels or entries; times in seconds.

    tool: the segmentation tool spec (see `ibisagent.tools.make_tool`); strategy: its prompt strategy;
      update: its update rule (LiteMedSAM: global or local, docs/tools.md).
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

    Who may call it and what it runs (see README, "Exposing the server safely"):
    policies: the policy specs the operator allows, each "NAME=SPEC" or a SPEC named by its part
      before ":" (compact:/x.pt is "compact"). Clients pick one by NAME, never by a path or a URL;
      the first is the default. The oracle needs a reference mask in the request.
    policy_options: the only request `policy_options` keys a client may set (no timeouts, retries
      or server-side paths: those are the operator's, in the spec).
    token: when set, every /v1 request needs `Authorization: Bearer TOKEN`.
    allowed_hosts: Host headers accepted (starlette's TrustedHostMiddleware; "*" any).
    cors_origins: origins allowed cross-origin (CORS); empty: none. State-changing requests (POST)
      that carry an Origin header must come from the server's own origin or one of these (403).
    tool_timeout_s: the longest one tool call (embed / predict) may take; a stuck call frees its
      worker (429) and the tool stays locked until the call ends. The episode deadline
      (episode_timeout_s) is enforced the same way around the whole episode, policy calls included:
      the request returns the steps so far with stop_reason "timeout".

    teach_dir: where policies taught from the page's accepted masks go (POST /v1/annotate/teach,
      see app/teaching.py); None: teaching is off. teach: its TeachConfig (None: the defaults,
      3 minutes of training at most). max_taught: the most taught policies kept; a teach request
      beyond it gets 507 (nothing is evicted), and a teach_dir holding more refuses to start.

    Memory, in bytes: max_image_bytes (images), max_volume_bytes (volumes), max_logits_bytes (tool
    states), max_session_bytes (one session's undo history; the oldest undo steps are dropped
    beyond it) and max_sessions_bytes (all sessions, LRU), plus max_images embeddings of
    EMBEDDING_BYTES and, with teach_dir, max_taught taught policies of up to `workers` instances
    (one per concurrent episode) of POLICY_BYTES each; their sum must stay within max_memory_bytes
    (checked at start).
    """

    tool: str = "litemedsam"
    strategy: str = "points+prior"
    update: str = "global"
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
    max_logits_bytes: int = 128 * MiB
    max_session_bytes: int = 64 * MiB
    max_sessions_bytes: int = 512 * MiB
    max_memory_bytes: int = 3 * 1024 * MiB
    tool_timeout_s: float = 30.0
    policies: tuple[str, ...] = ("compact", "oracle")
    policy_options: tuple[str, ...] = ("iou_threshold",)
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ("*",)
    cors_origins: tuple[str, ...] = ()
    teach_dir: str | None = None
    teach: TeachConfig | None = None
    max_taught: int = 8

    def memory_budget(self) -> dict[str, int]:
        """The byte bound of each store and their total (what the server holds at most)."""
        parts = {
            "images": self.max_image_bytes,
            "embeddings": self.max_images * EMBEDDING_BYTES,
            "volumes": self.max_volume_bytes,
            "logits": self.max_logits_bytes,
            "sessions": self.max_sessions_bytes,
            "taught": self.max_taught * self.workers * POLICY_BYTES if self.teach_dir else 0,
        }
        return {**parts, "total": sum(parts.values())}

    def check(self) -> None:
        """Refuse settings that break the bounds (an IbisInputError naming the setting)."""
        from ibisagent.errors import IbisInputError

        budget = self.memory_budget()
        total = budget.pop("total")
        if total > self.max_memory_bytes:
            parts = ", ".join(f"{k} {v / MiB:.0f}" for k, v in budget.items() if v)
            raise IbisInputError(
                "memory limits",
                f"the stores may hold {total / MiB:.0f} MiB ({parts}), above max_memory_bytes "
                f"({self.max_memory_bytes / MiB:.0f} MiB)",
            )
        if self.teach_dir and self.max_taught < 1:
            raise IbisInputError("max_taught", "keep at least one taught policy when teaching is on")
        if self.max_pixels * 3 > self.max_image_bytes:
            raise IbisInputError("memory limits", "one image of max_pixels does not fit in max_image_bytes")
        if not self.policies:
            raise IbisInputError("--policy", "allow at least one policy")
        from ibisagent.tools import check_update_rule

        check_update_rule(self.tool, self.update)

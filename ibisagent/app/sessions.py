"""Interactive sessions: a person's clicks in the web page go through the human policy and the
environment, exactly as any policy's turns do.

A session is one `IbisEnv` episode kept on the server. Each click of the page arrives as a human
policy command ("p X,Y", "n X,Y" with X, Y normalised, or "stop"); `HumanPolicy` turns it into an
assistant turn of the released protocol and `IbisEnv.step` executes it (the tool with all clicks
so far and the previous logits), so the session's `Episode` record holds real protocol turns,
masks, IoUs and rewards, whoever made them. An agent run (`POST /v1/segment`) opens a session on
its own environment, so a person continues the agent's episode where it stopped.

Undo returns to the state before the last person action (or before the whole agent run); reset
to the start. Memory is bounded in bytes: undo states keep their masks bit-packed (1 bit a pixel),
one session's history beyond `max_session_bytes` loses its oldest undo states (reset still works),
and all sessions together live in an LRU store bounded by count and bytes; an evicted id answers 404.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ibisagent.app.errors import bad_request, not_found
from ibisagent.app.schemas import MaskIn, MaskOut, Output, StepOut
from ibisagent.app.store import BoundedLRU
from ibisagent.env.env import EnvState
from ibisagent.errors import IbisInputError
from ibisagent.io.sizes import nbytes_of


class SessionRequest(BaseModel):
    """Open a session on an uploaded image (a person will click; no agent)."""

    model_config = ConfigDict(extra="forbid")
    image_id: str
    query: str = Field("", max_length=1000, description="what the person segments (kept in the episode)")
    reference_mask: MaskIn | None = Field(None, description="ground truth: IoU per step")
    init_mask: MaskIn | None = Field(None, description="an existing mask to refine")
    outputs: list[Output] = Field(default_factory=lambda: ["rle", "overlay"])


class ActRequest(BaseModel):
    """One person action, in the human policy's command syntax (ibisagent.policies.human):
    "p X,Y" positive click, "n X,Y" negative click (X = column / W, Y = row / H in [0, 1], or
    pixels when above 1), "stop [ANSWER]" to finish."""

    model_config = ConfigDict(extra="forbid")
    command: str = Field(..., min_length=1, max_length=200)
    outputs: list[Output] = Field(default_factory=lambda: ["rle", "overlay"])


class ReferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference_mask: MaskIn | None = Field(None, description="ground truth for IoU; null removes it")
    outputs: list[Output] = Field(default_factory=lambda: ["rle", "overlay"])


class SessionResponse(BaseModel):
    session_id: str
    image_id: str
    steps: int = Field(..., description="steps in the session's episode (agent and person)")
    step: StepOut | None = Field(None, description="the step just taken (act)")
    mask: MaskOut
    iou: float | None
    clicks: list[tuple[int, int, int]]
    done: bool
    stop_reason: str | None
    can_undo: bool
    tool_ms: float | None = None


@dataclass
class Session:
    id: str
    image_id: str
    env: Any  # ibisagent.env.IbisEnv
    policy: Any  # ibisagent.policies.human.HumanPolicy
    undo: list[EnvState] = field(default_factory=list)  # states before each step, oldest first
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: str | None = None


class Sessions:
    """Sessions of one service (bounded LRU; `max_steps` per session)."""

    def __init__(
        self,
        service,
        max_entries: int = 64,
        max_steps: int = 64,
        max_session_bytes: int | None = None,
        max_total_bytes: int | None = None,
    ):
        self.service, self.max_steps, self.max_session_bytes = service, max_steps, max_session_bytes
        self._store = BoundedLRU(max_entries, max_total_bytes)

    @property
    def nbytes(self) -> int:
        """Bytes all sessions hold (as accounted after their last change)."""
        return self._store.nbytes

    @staticmethod
    def _size(session: Session) -> int:
        """Bytes one session holds: its current mask and logits, its undo states and its episode
        record (RLE masks as Python int lists, about 36 bytes a count)."""
        env = session.env
        steps = sum(36 * len(st.mask["counts"]) for st in env.episode.steps if st.mask is not None)
        return int(env.mask.nbytes) + nbytes_of(env.logits) + sum(u.nbytes for u in session.undo) + steps

    def _account(self, session: Session) -> None:
        """Drop the oldest undo states (keeping the reset point) beyond max_session_bytes, then
        record the session's size in the store (which evicts other sessions beyond its bound)."""
        size = self._size(session)
        while self.max_session_bytes is not None and size > self.max_session_bytes and len(session.undo) > 1:
            del session.undo[1]
            size = self._size(session)
        self._store.resize(session.id, size)

    # -- opening ----------------------------------------------------------------------
    def _human(self, session_box: list):
        from ibisagent.policies.human import HumanPolicy

        # the page's command for this step; a bad command is the request's error, not asked again
        return HumanPolicy(ask=lambda obs, episode: session_box[0].pending, max_tries=1, report=None)

    def _add(self, image_id: str, env, undo: list[EnvState]) -> Session:
        box: list = []
        session = Session(uuid.uuid4().hex, image_id, env, self._human(box), undo)
        box.append(session)
        self._store.put(session.id, session, 0)
        self._account(session)
        return session

    def open(self, req: SessionRequest) -> dict:
        """A new episode on an uploaded image, for a person to click."""
        from ibisagent.env import IbisEnv

        svc = self.service
        item = svc.resolve_image(req.image_id, None)
        ref = svc._mask(req.reference_mask, item, "reference_mask")
        init = svc._mask(req.init_mask, item, "init_mask")
        env = IbisEnv(svc.serial, max_steps=self.max_steps)
        env.reset(item.image, req.query, ref, init, item.name)
        env.episode.meta.update(policy="human", tool=svc.tool.name, image_id=item.id)
        return self.state(self._add(item.id, env, []), req.outputs)

    def adopt(self, env, image_id: str, init_mask: np.ndarray | None) -> str:
        """Open a session on the environment an agent episode ran in: a person continues it."""
        ep = env.episode
        ep.meta["agent_stop_reason"] = ep.stop_reason
        undo = [env.blank_state(init_mask)]
        env.reopen(self.max_steps)  # the person takes over where the agent stopped
        return self._add(image_id, env, undo).id

    def get(self, session_id: str) -> Session:
        session = self._store.get(session_id)
        if session is None:
            raise not_found(f"unknown or expired session_id {session_id[:64]!r}; open a new session")
        return session

    # -- acting -----------------------------------------------------------------------
    def act(self, session_id: str, req: ActRequest) -> dict:
        """The person's command through HumanPolicy.act, then IbisEnv.step."""
        import time

        session = self.get(session_id)
        with session.lock:
            env = session.env
            if env.done:
                raise bad_request(f"the session has ended ({env.episode.stop_reason}); undo, reset or open a new one")
            obs = env.observation()
            session.pending = req.command
            t0 = time.perf_counter()
            try:
                turn = session.policy.act(obs, env.episode)
            except IbisInputError as exc:
                raise bad_request(f"command {req.command[:60]!r}: {exc.problem}") from None
            finally:
                session.pending = None
            policy_s = time.perf_counter() - t0
            snap = env.snapshot()
            env.step(turn, policy_s=policy_s)
            session.undo.append(snap)
            who = env.episode.meta.setdefault("person_steps", [])
            who.append(env.episode.steps[-1].index)
            self._account(session)
            return self.state(session, req.outputs, step=True)

    def undo(self, session_id: str, outputs: list[str]) -> dict:
        session = self.get(session_id)
        with session.lock:
            if not session.undo:
                raise bad_request("nothing to undo")
            session.env.restore(session.undo.pop())
            self._forget_person_steps(session)
            self._account(session)
            return self.state(session, outputs)

    def reset(self, session_id: str, outputs: list[str]) -> dict:
        session = self.get(session_id)
        with session.lock:
            if session.undo:
                session.env.restore(session.undo[0])
                session.undo.clear()
            self._forget_person_steps(session)
            self._account(session)
            return self.state(session, outputs)

    def set_reference(self, session_id: str, req: ReferenceRequest) -> dict:
        session = self.get(session_id)
        with session.lock:
            item = self.service.resolve_image(session.image_id, None)
            ref = self.service._mask(req.reference_mask, item, "reference_mask")
            session.env.set_reference(ref)
            return self.state(session, req.outputs)

    def episode(self, session_id: str) -> dict:
        session = self.get(session_id)
        with session.lock:
            return session.env.episode.to_dict()

    @staticmethod
    def _forget_person_steps(session: Session) -> None:
        meta = session.env.episode.meta
        n = len(session.env.episode.steps)
        meta["person_steps"] = [i for i in meta.get("person_steps", []) if i <= n]

    # -- the answer -------------------------------------------------------------------
    def state(self, session: Session, outputs, step: bool = False) -> dict:
        from ibisagent.app.codec import mask_out, step_out

        env, ep = session.env, session.env.episode
        clicks = [(int(x), int(y), int(lab)) for (x, y), lab in zip(env.points, env.labels)]
        last = step_out(ep.steps[-1], int(np.count_nonzero(env.mask))) if step and ep.steps else None
        return {
            "session_id": session.id,
            "image_id": session.image_id,
            "steps": len(ep.steps),
            "step": last,
            "mask": mask_out(env.mask, outputs, env.image, clicks),
            "iou": env.current_iou(),
            "clicks": clicks,
            "done": env.done,
            "stop_reason": ep.stop_reason,
            "can_undo": bool(session.undo),
            "tool_ms": 1000 * ep.steps[-1].tool_s if last else None,
        }

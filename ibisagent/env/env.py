"""The IBISAgent MDP as a small Gymnasium-shaped environment.

State: the image, the query, all clicks so far, the current mask and the tool's logits.
`step` takes the policy's raw text (or a parsed `Action`), runs the tool with all clicks so far
and the previous logits as spatial prior, and returns the overlay as the next observation.
A `Discard Mask` action (our protocol extension, docs/protocol.md) drops all clicks, the mask
and the logits and continues from an empty mask; it is not terminal.
Stop rules (as released): the stop action; an unparsable action; the same action three times
in a row; `max_steps` actions (truncation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ibisagent.env.episode import Episode, StepRecord, encode_mask
from ibisagent.env.protocol import Action, first_turn_text, parse_response, refinement_turn_text
from ibisagent.io.sizes import nbytes_of
from ibisagent.metrics import iou as mask_iou
from ibisagent.overlay import OVERLAY_ALPHA, OVERLAY_COLOR, render_overlay
from ibisagent.tools.base import SegmentationTool


@dataclass
class Observation:
    """What the policy sees: `image` is the original image at an initial step and the overlay
    afterwards (H x W x 3 uint8); `text` is the user turn of the released protocol."""

    # The image, or a function that renders it: the overlay is drawn on first access, so
    # policies that never look at it (the simulator, the compact policy) do not pay for it.
    image_or_render: np.ndarray | Callable[[], np.ndarray]
    mask: np.ndarray  # H x W bool, the current mask
    text: str
    query: str
    step: int
    clicks: list[tuple[int, int, int]]  # (x, y, label) pixels
    original: np.ndarray  # the unmodified image

    @property
    def image(self) -> np.ndarray:
        if callable(self.image_or_render):
            self.image_or_render = self.image_or_render()
        return self.image_or_render


RewardFn = Callable[[dict], float]


@dataclass(frozen=True)
class EnvState:
    """Everything `IbisEnv.step` changes, as `IbisEnv.snapshot` took it: enough to undo steps or to
    continue from a shared prefix of clicks. The mask is bit-packed (`nbytes` counts what is held)."""

    points: tuple[tuple[float, float], ...]  # (x, y) pixels
    labels: tuple[int, ...]  # 1 positive, 0 negative
    packed_mask: np.ndarray  # np.packbits of the H x W bool mask
    mask_shape: tuple[int, int]
    logits: Any  # the tool's low-res logits (or None)
    t: int
    recent: tuple[tuple, ...]
    done: bool
    n_steps: int
    stop_reason: str | None
    answer: str | None

    @property
    def mask(self) -> np.ndarray:
        H, W = self.mask_shape
        return np.unpackbits(self.packed_mask, count=H * W).reshape(H, W).astype(bool)

    @property
    def nbytes(self) -> int:
        return int(self.packed_mask.nbytes) + nbytes_of(self.logits) + 16 * (len(self.points) + len(self.recent))


def iou_gain_reward(ctx: dict) -> float:
    """Default per-step reward: IoU after minus IoU before (0 without a reference mask)."""
    if ctx.get("iou") is None:
        return 0.0
    return float(ctx["iou"] - (ctx.get("prev_iou") or 0.0))


class IbisEnv:
    """reset(image, query, gt_mask=None, init_mask=None) -> (obs, info);
    step(response) -> (obs, reward, terminated, truncated, info)."""

    def __init__(
        self,
        tool: SegmentationTool,
        max_steps: int = 20,
        repeat_limit: int = 3,
        overlay_color=OVERLAY_COLOR,
        overlay_alpha: float = OVERLAY_ALPHA,
        reward_fn: RewardFn = iou_gain_reward,
    ):
        self.tool = tool
        self.max_steps = max_steps
        self.repeat_limit = repeat_limit
        self.overlay_color = overlay_color
        self.overlay_alpha = overlay_alpha
        self.reward_fn = reward_fn
        self.episode: Episode | None = None

    # -- public API -------------------------------------------------------------------
    def reset(
        self,
        image: np.ndarray,
        query: str,
        gt_mask: np.ndarray | None = None,
        init_mask: np.ndarray | None = None,
        image_name: str | None = None,
    ) -> tuple[Observation, dict]:
        self.image = np.asarray(image)
        H, W = self.image.shape[:2]
        for name, m in (("reference mask", gt_mask), ("initial mask", init_mask)):
            if m is not None and np.asarray(m).shape != (H, W):
                raise ValueError(f"{name} is {np.asarray(m).shape[::-1]} but the image is {(W, H)}")
        self.query = query
        self.gt = None if gt_mask is None else np.asarray(gt_mask, bool)
        self.embedding = self.tool.embed(self.image)
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        if init_mask is not None and np.any(init_mask):
            self.mask = np.asarray(init_mask, bool)
            self.logits = self.tool.mask_to_logits(self.embedding, self.mask)
        else:
            self.mask = np.zeros((H, W), bool)
            self.logits = None
        self.refining = init_mask is not None and bool(np.any(init_mask))
        self.t = 0
        self._recent: list[tuple] = []
        self.done = False
        self.episode = Episode(
            query=query,
            image_size=(H, W),
            image=image_name,
            init_mask=encode_mask(self.mask) if self.refining else None,
        )
        return self.observation(), self._info()

    def step(self, response: str | Action, policy_s: float = 0.0):
        if self.done:
            raise RuntimeError("episode is over; call reset()")
        text = response if isinstance(response, str) else ""
        action = parse_response(response) if isinstance(response, str) else response
        prev_iou = self.current_iou()
        prev_mask = self.mask
        self.t += 1
        rec = StepRecord(index=self.t, response=text, kind=action.kind, error=action.error, answer=action.answer)
        terminated = truncated = False
        reason = None
        if action.kind == "invalid":
            terminated, reason = True, "invalid"
        elif action.kind == "stop":
            terminated, reason = True, "stop"
            self.episode.answer = action.answer
        elif action.kind == "discard":
            self.points, self.labels = [], []
            self.mask = np.zeros(self.image.shape[:2], bool)
            self.logits = None
            rec.mask = encode_mask(self.mask)
            if self._repeated(action):
                terminated, reason = True, "repeat"
        else:
            H, W = self.image.shape[:2]
            px, py = action.to_pixel(W, H)
            self.points.append((px, py))
            self.labels.append(action.label)
            t0 = time.perf_counter()
            out = self.tool.predict(self.embedding, np.array(self.points), np.array(self.labels), self.logits)
            rec.tool_s = time.perf_counter() - t0
            self.mask, self.logits = out.mask, out.logits
            rec.click = (px, py, action.label)
            rec.mask = encode_mask(self.mask)
            rec.score = out.score
            if self._repeated(action):
                terminated, reason = True, "repeat"
        rec.iou = self.current_iou()
        rec.policy_s = policy_s
        ctx = {
            "action": action,
            "prev_mask": prev_mask,
            "mask": self.mask,
            "gt": self.gt,
            "prev_iou": prev_iou,
            "iou": rec.iou,
            "step": self.t,
            "response": text,
        }
        rec.reward = float(self.reward_fn(ctx))
        if not terminated and self.t >= self.max_steps:
            truncated, reason = True, "max_steps"
        self.episode.steps.append(rec)
        if terminated or truncated:
            self.done = True
            self.episode.stop_reason = reason
        return self.observation(), rec.reward, terminated, truncated, self._info(action)

    def current_iou(self) -> float | None:
        return None if self.gt is None else mask_iou(self.mask, self.gt)

    def snapshot(self) -> EnvState:
        """The state after the steps so far (after `reset`), for `restore`."""
        ep = self.episode
        return EnvState(
            points=tuple(self.points),
            labels=tuple(self.labels),
            packed_mask=np.packbits(self.mask),
            mask_shape=self.mask.shape,
            logits=self.logits,
            t=self.t,
            recent=tuple(self._recent),
            done=self.done,
            n_steps=len(ep.steps),
            stop_reason=ep.stop_reason,
            answer=ep.answer,
        )

    def restore(self, state: EnvState) -> None:
        """Go back to `state`, taken on this episode (undo: later step records are dropped) or on
        another episode of the same image and query (continue from its clicks)."""
        if state.mask_shape != self.image.shape[:2]:
            raise ValueError(f"the state is for a {state.mask_shape} image, this one is {self.image.shape[:2]}")
        self.points, self.labels = list(state.points), list(state.labels)
        self.mask, self.logits = state.mask, state.logits
        self.t, self._recent, self.done = state.t, list(state.recent), state.done
        del self.episode.steps[state.n_steps :]
        self.episode.stop_reason, self.episode.answer = state.stop_reason, state.answer

    def blank_state(self, init_mask: np.ndarray | None = None) -> EnvState:
        """The state right after `reset` on this image with `init_mask` (H x W bool, or None for an
        empty start), for an environment that has already been stepped: `restore` it to start over."""
        H, W = self.image.shape[:2]
        if init_mask is not None and np.any(init_mask):
            mask, logits = np.asarray(init_mask, bool), self.tool.mask_to_logits(self.embedding, init_mask)
        else:
            mask, logits = np.zeros((H, W), bool), None
        return EnvState((), (), np.packbits(mask), (H, W), logits, 0, (), False, 0, None, None)

    def reopen(self, more_steps: int) -> None:
        """Let an episode that ended (a stop, or its step limit) go on for `more_steps` more steps,
        e.g. when a person takes over where the agent stopped."""
        self.done, self.episode.stop_reason = False, None
        self.max_steps = len(self.episode.steps) + more_steps

    def set_reference(self, gt_mask: np.ndarray | None) -> None:
        """Give (or take away) the reference mask mid-episode: IoU and rewards use it from now on."""
        H, W = self.image.shape[:2]
        if gt_mask is not None and np.asarray(gt_mask).shape != (H, W):
            raise ValueError(f"reference mask is {np.asarray(gt_mask).shape[::-1]} but the image is {(W, H)}")
        self.gt = None if gt_mask is None else np.asarray(gt_mask, bool)

    # -- helpers ----------------------------------------------------------------------
    def _repeated(self, action: Action) -> bool:
        """Record `action`; True when it is the same as the previous `repeat_limit - 1`."""
        self._recent = (self._recent + [action.signature()])[-self.repeat_limit :]
        return len(self._recent) == self.repeat_limit and len(set(self._recent)) == 1

    def observation(self) -> Observation:
        """What the policy sees now (the same as the last `reset` / `step` returned)."""
        initial = self.t == 0 and not self.refining
        image, mask, color, alpha = self.image, self.mask, self.overlay_color, self.overlay_alpha
        img = image if initial else (lambda: render_overlay(image, mask, color, alpha))
        text = first_turn_text(self.query) if initial else refinement_turn_text(self.query)
        clicks = [(x, y, lab) for (x, y), lab in zip(self.points, self.labels)]
        return Observation(
            image_or_render=img,
            mask=self.mask,
            text=text,
            query=self.query,
            step=self.t,
            clicks=clicks,
            original=self.image,
        )

    def _info(self, action: Action | None = None) -> dict[str, Any]:
        return {
            "step": self.t,
            "iou": self.current_iou(),
            "clicks": [(x, y, lab) for (x, y), lab in zip(self.points, self.labels)],
            "action": action,
            "stop_reason": self.episode.stop_reason if self.episode else None,
        }

"""The five rewards of the reference RL stage (spec section 5) and their mean, shared by the
trainers (TRL-style functions), the environment (`env_reward`) and evaluation.

Per action, with the mask before it (M_prev, IoU_prev) and after it (M, IoU) vs the reference:
- S_format: 1 if `<think>` and `<action>` are well formed, the action parses and a stop carries
  a closed `<answer>` (`env.protocol.format_check`), else 0;
- S_ans: IoU after the action: 3 if > 0.80, 2 if > 0.70, 1 if > 0.50, else 0. Closed-form
  (VQA) items: 3 when a stop's answer matches the expected one (yes/no when the expected answer
  is yes/no, else the normalised text), else 0. A stop whose yes/no contradicts the expected
  yes/no answer of a segmentation question scores 0;
- S_click: a positive click inside FN = gt & ~M_prev or a negative click inside FP = ~gt & M_prev:
  +1; any other click (or outside the image): -1; 0 for a stop, a discard or an unparsable turn
  (as the released code);
- S_pseg: 1 if IoU > IoU_prev, else 0 (so 0 for a stop);
- S_len: +1 while step <= 5, else -0.2 per step beyond 5 (step is the 1-based action index);
- S = (S_format + S_ans + S_click + S_pseg + S_len) / 5.
The released data converter forgot the previous IoU and the step index; here both are inputs.
Masks are H x W bool; clicks (x, y, label) pixels of the original image.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from ibisagent.env.protocol import Action, format_check, parse_response
from ibisagent.geometry import norm_to_pixel, pixel_to_norm
from ibisagent.metrics import iou as mask_iou
from ibisagent.metrics import yes_no

IOU_BANDS = ((0.80, 3.0), (0.70, 2.0), (0.50, 1.0))
FREE_STEPS = 5
STEP_PENALTY = 0.2
TERMS = ("format", "ans", "click", "pseg", "len")


def format_score(text: str) -> float:
    return 1.0 if format_check(text) is None else 0.0


def _norm(text: str | None) -> str:
    return re.sub(r"[\s\.\!\?,;:]+", " ", (text or "").lower()).strip()


def answer_matches(answer: str | None, expected: str) -> bool:
    """Exact match of a closed-form answer: by yes/no when `expected` is a yes/no answer, else
    by the text (case, spacing and punctuation ignored)."""
    want = yes_no(expected)
    if want is not None:
        return yes_no(answer) == want
    return _norm(answer) == _norm(expected)


def answer_score(action: Action, iou_after: float | None, expected: str | None = None, closed: bool = False) -> float:
    """S_ans (see the module doc). `closed`: a VQA item scored by its answer only."""
    if action.kind == "invalid":
        return 0.0
    if closed:
        return (
            3.0 if action.kind == "stop" and expected is not None and answer_matches(action.answer, expected) else 0.0
        )
    if (
        action.kind == "stop"
        and expected
        and yes_no(expected) is not None
        and yes_no(action.answer) != yes_no(expected)
    ):
        return 0.0
    if iou_after is None:
        return 0.0
    for lo, score in IOU_BANDS:
        if iou_after > lo:
            return score
    return 0.0


def click_score(action: Action, prev_mask: np.ndarray, gt: np.ndarray) -> float:
    """S_click: +1 / -1 for a click in / out of the error region it should fix; 0 otherwise."""
    if not action.is_click:
        return 0.0
    H, W = gt.shape
    px, py = norm_to_pixel(action.x, action.y, W, H, clip=False)
    if not (0 <= px < W and 0 <= py < H):
        return -1.0
    region = (gt & ~prev_mask) if action.kind == "positive" else (~gt & prev_mask)
    return 1.0 if region[py, px] else -1.0


def pseg_score(iou_after: float | None, prev_iou: float | None, action: Action | None = None) -> float:
    if action is not None and action.kind in ("stop", "invalid"):
        return 0.0
    if iou_after is None:
        return 0.0
    return 1.0 if iou_after > (prev_iou or 0.0) else 0.0


def length_score(step: int) -> float:
    return 1.0 if step <= FREE_STEPS else -STEP_PENALTY * (step - FREE_STEPS)


def score_terms(
    text: str,
    prev_mask: np.ndarray | None,
    mask_after: np.ndarray | None,
    gt: np.ndarray | None,
    prev_iou: float | None,
    step: int,
    expected: str | None = None,
    closed: bool = False,
) -> dict[str, float]:
    """All five terms and their mean (`total`) for one assistant turn."""
    action = parse_response(text)
    after = None if gt is None or mask_after is None else mask_iou(mask_after, gt)
    if action.kind == "stop" and gt is not None and prev_mask is not None:
        after = mask_iou(prev_mask, gt)
    return action_terms(action, format_score(text), after, prev_mask, gt, prev_iou, step, expected, closed)


def action_terms(
    action: Action,
    format_s: float,
    iou_after: float | None,
    prev_mask: np.ndarray | None,
    gt: np.ndarray | None,
    prev_iou: float | None,
    step: int,
    expected: str | None = None,
    closed: bool = False,
) -> dict[str, float]:
    """The five terms of one parsed action and their mean (`total`): the one place they are summed."""
    terms = {
        "format": format_s,
        "ans": answer_score(action, iou_after, expected, closed),
        "click": 0.0 if gt is None or prev_mask is None else click_score(action, prev_mask, gt),
        "pseg": pseg_score(iou_after, prev_iou, action),
        "len": length_score(step),
    }
    terms["total"] = sum(terms[k] for k in TERMS) / len(TERMS)
    return terms


# -- the environment's reward_fn -----------------------------------------------------------------
def make_env_reward(expected: str | None = None, closed: bool = False) -> Callable[[dict], float]:
    """A reward_fn for `IbisEnv(reward_fn=...)`: S of each step from the environment's ctx
    (action, prev_mask, mask, gt, prev_iou, iou, step, response)."""

    def reward(ctx: dict) -> float:
        action: Action = ctx["action"]
        text = ctx.get("response") or ""
        fmt = format_score(text) if text else float(action.kind != "invalid")
        terms = action_terms(
            action,
            fmt,
            ctx.get("iou"),
            ctx["prev_mask"],
            ctx.get("gt"),
            ctx.get("prev_iou"),
            int(ctx["step"]),
            expected,
            closed,
        )
        return terms["total"]

    return reward


# -- TRL-style reward functions over step-level rows (synth.export.rl_rows) -----------------------
def completion_text(completion) -> str:
    """The assistant text of a TRL completion (a string, or a list of chat messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else ""
        if isinstance(content, list):
            return "".join(c.get("text", "") for c in content if isinstance(c, dict))
        return str(content)
    return ""


class StepScorer:
    """Scores completions of step-level rows: rebuilds the state (the original image, the
    given mask, the clicks in force) in `IbisEnv` with `tool`, takes the completion as the next
    action, and memoises the terms so the five functions share one tool call per completion."""

    def __init__(self, tool, cache_size: int = 4096):
        self.tool = tool
        self.cache: OrderedDict = OrderedDict()
        self.cache_size = cache_size
        self._images: OrderedDict = OrderedDict()
        self._prefix: OrderedDict = OrderedDict()  # (image, given mask, clicks) -> env state

    def _load(self, image_path: str, gt_path: str):
        key = (image_path, gt_path)
        if key not in self._images:
            from ibisagent.io.images import load_image, load_mask

            image = load_image(image_path)
            self._images[key] = (image, load_mask(gt_path, shape=image.shape[:2]))
            while len(self._images) > 8:
                self._images.popitem(last=False)
        return self._images[key]

    def _env(self, row: dict, clicks: tuple):
        """An environment in the state after `clicks` (from the row's image and given mask),
        built from the cached state after `clicks[:-1]`: one tool call per new prefix."""
        from ibisagent.env.env import IbisEnv
        from ibisagent.io.rle import rle_decode

        image, gt = self._load(row["image_path"], row["gt_mask_path"])
        H, W = gt.shape
        env = IbisEnv(self.tool, max_steps=10**6, repeat_limit=10**6)
        init = rle_decode(json.loads(row["init_mask"])) if row.get("init_mask") else None
        env.reset(image, row.get("query") or "", gt_mask=gt, init_mask=init)
        if clicks:
            key = (row["image_path"], row.get("init_mask") or "", clicks[:-1])
            state = self._prefix.get(key)
            if state is None:
                state = self._env(row, clicks[:-1]).snapshot()
            env.restore(state)
            x, y, label = clicks[-1]
            env.step(Action("positive" if label == 1 else "negative", *pixel_to_norm(x, y, W, H)))
            self._prefix[(row["image_path"], row.get("init_mask") or "", clicks)] = env.snapshot()
            while len(self._prefix) > self.cache_size:
                self._prefix.popitem(last=False)
        return env

    def terms(self, text: str, row: dict) -> dict[str, float]:
        clicks = tuple(tuple(int(v) for v in c) for c in row.get("prev_clicks") or [])
        key = (row["image_path"], row["gt_mask_path"], row.get("init_mask") or "", clicks, text)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        env = self._env(row, clicks)
        prev_mask = env.mask
        action = parse_response(text)
        mask_after = prev_mask
        if action.is_click or action.kind == "discard":
            env.step(action)
            mask_after = env.mask
        out = score_terms(
            text,
            prev_mask,
            mask_after,
            env.gt,
            row.get("prev_iou"),
            int(row["step"]),
            row.get("answer"),
            bool(row.get("closed", False)),
        )
        self.cache[key] = out
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return out


ROW_KEYS = ("image_path", "gt_mask_path", "init_mask", "prev_clicks", "prev_iou", "step", "answer", "closed", "query")


def make_reward_funcs(tool) -> dict[str, Callable]:
    """{"s_format", "s_ans", "s_click", "s_pseg", "s_len", "s_total"} -> functions
    `(completions, **kwargs) -> list[float]` for TRL's GRPOTrainer: kwargs are the dataset's
    columns (lists, one value per completion) as written by `synth.export.rl_rows`."""
    scorer = StepScorer(tool)

    def make(term: str) -> Callable:
        def fn(completions, **kwargs) -> list[float]:
            out = []
            for i, c in enumerate(completions):
                row = {k: kwargs[k][i] for k in ROW_KEYS if k in kwargs and kwargs[k] is not None}
                text = completion_text(c)
                if term == "format":
                    out.append(format_score(text))
                elif term == "len":
                    out.append(length_score(int(row["step"])))
                else:
                    out.append(scorer.terms(text, row)[term])
            return out

        fn.__name__ = f"s_{term}"
        return fn

    return {f"s_{t}": make(t) for t in (*TERMS, "total")}

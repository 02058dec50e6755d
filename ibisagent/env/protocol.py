"""The released IBISAgent text protocol: prompts, the action parser and formatter.

This is the one parser of model output in the project. It never raises on model text: a
malformed response gives an `Action` with `kind == "invalid"` and `error` saying what is wrong.

Coordinates in the text are normalised: x = column / W, y = row / H, both in [0, 1], written
with four decimals. Pixel from normalised: (int(x * W), int(y * H)), clipped to the image.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ibisagent.geometry import norm_to_pixel

SYSTEM_PROMPT = (
    "You are a precise and expert medical segmentation agent. Your mission is to accurately segment a target "
    "object in a medical image through a series of interactive point placements. You will be given an image and "
    "an instruction. You must carefully analyze the image state. If there is no mask, it is an initialization "
    "step. Your goal is to place a Positive Point on a clear, representative part of the target object. If a "
    "semi-transparent green mask is present, it is a refinement step. Your goal is to improve its accuracy. "
    "Place a Positive Point on a region of the target that the mask has missed, or a Negative Point on an area "
    "the mask has incorrectly included.\n"
    "Your response must strictly follow this structure: first, your detailed reasoning within <think> tags, and "
    "then your single, decisive move within <action> tags. The only valid actions are Positive Point (x, y), "
    "Negative Point (x, y), or Terminate. All coordinates (x, y) must be normalized to a 0.0-1.0 scale and "
    "formatted to four decimal places, for example: Positive Point (0.5000, 0.2500). Only use Terminate when the "
    "mask perfectly aligns with the target boundary. If you Terminate, you must also append a final, concise "
    "summary in an <answer> tag."
)

REFINEMENT_TEMPLATE = (
    '<image>This is a refinement step. User\'s original query: "{query}". Do you think the image with '
    "semi-transparent green mask need further segmentation? If so, please use point action; otherwise, use "
    "Terminate action."
)


def first_turn_text(query: str) -> str:
    """User text of step 1 (the image goes before it)."""
    return "<image>" + query


def refinement_turn_text(query: str) -> str:
    """User text of every later step (the overlay image goes before it)."""
    return REFINEMENT_TEMPLATE.format(query=query)


@dataclass(frozen=True)
class Action:
    """One parsed agent move.

    kind: "positive" | "negative" | "stop" | "discard" | "invalid". For clicks, (x, y) are
    normalised to [0, 1] (x = column / W, y = row / H). `answer` is the <answer> text of a stop.
    "discard" (`Discard Mask`) is our extension (docs/protocol.md): drop the given or current
    mask and all clicks, and start again from an empty mask.
    """

    kind: str
    x: float | None = None
    y: float | None = None
    answer: str | None = None
    think: str | None = None
    error: str | None = None

    @property
    def is_click(self) -> bool:
        return self.kind in ("positive", "negative")

    @property
    def label(self) -> int:
        """1 for a positive click, 0 for a negative one (SAM's convention)."""
        return 1 if self.kind == "positive" else 0

    def to_pixel(self, width: int, height: int) -> tuple[int, int]:
        """(column, row) pixel: (int(x * W), int(y * H)) clipped to the image, as released."""
        return norm_to_pixel(self.x, self.y, width, height)

    def signature(self) -> tuple:
        """What counts as 'the same action' for the repeat-3-times stop rule."""
        return (self.kind, None if self.x is None else round(self.x, 4), None if self.y is None else round(self.y, 4))


_BLOCK = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.S | re.I) for tag in ("think", "action", "answer")}
_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
_CLICK = re.compile(rf"^(positive|negative)\s+point\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)$", re.I)
_STOP = re.compile(r"^(terminate|termination)\.?$", re.I)
_DISCARD = re.compile(r"^discard(\s+mask)?\.?$", re.I)


def parse_response(text: str) -> Action:
    """Parse one assistant turn. Never raises; `kind == "invalid"` carries `error`."""
    if not isinstance(text, str):
        return Action("invalid", error=f"response is {type(text).__name__}, not text")
    think_m = _BLOCK["think"].search(text)
    think = think_m.group(1).strip() if think_m else None
    action_ms = _BLOCK["action"].findall(text)
    if not action_ms:
        missing = "<action> block missing" if "<action>" not in text.lower() else "<action> block not closed"
        return Action("invalid", think=think, error=missing)
    if len(action_ms) > 1:
        return Action("invalid", think=think, error=f"{len(action_ms)} <action> blocks, expected one")
    body = " ".join(action_ms[0].split())
    answer_m = _BLOCK["answer"].search(text)
    answer = answer_m.group(1).strip() if answer_m else None
    if _STOP.match(body):
        return Action("stop", answer=answer, think=think)
    if _DISCARD.match(body):
        return Action("discard", think=think)
    m = _CLICK.match(body)
    if not m:
        return Action("invalid", think=think, error=f"unrecognised action {body[:60]!r}")
    x, y = float(m.group(2)), float(m.group(3))
    if not (math.isfinite(x) and math.isfinite(y)):
        return Action("invalid", think=think, error=f"coordinates are not finite numbers ({body})")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        return Action("invalid", think=think, error=f"coordinates outside [0, 1] ({x}, {y})")
    return Action(m.group(1).lower(), x=x, y=y, answer=answer, think=think)


def format_check(text: str) -> str | None:
    """None when the turn is well formed (spec's S_format), else what is wrong."""
    action = parse_response(text)
    if action.kind == "invalid":
        return action.error
    if action.think is None:
        return "<think> block missing or not closed"
    if action.kind == "stop" and action.answer is None:
        return "stop without a closed <answer> block"
    return None


def format_action(kind: str, x: float | None = None, y: float | None = None) -> str:
    """The action line: 'Positive Point (0.4120, 0.5531)', 'Negative Point (...)', 'Terminate'
    or (our extension) 'Discard Mask'."""
    if kind == "stop":
        return "Terminate"
    if kind == "discard":
        return "Discard Mask"
    if kind not in ("positive", "negative"):
        raise ValueError(f"cannot format action kind {kind!r}")
    return f"{kind.capitalize()} Point ({x:.4f}, {y:.4f})"


def format_response(
    think: str, kind: str, x: float | None = None, y: float | None = None, answer: str | None = None
) -> str:
    """A whole assistant turn in the released layout."""
    text = f"<think>\n{think.strip()}\n</think>\n<action>\n{format_action(kind, x, y)}\n</action>"
    if kind == "stop":
        text += f"\n<answer>{(answer or '').strip()}</answer>"
    return text

"""Reasoning text for each synthesized step, written only from measured facts (`facts.py`).

Every sentence is filled from `StateFacts` / `Region` values; the wording varies with a seeded
`random.Random`. `check_reasoning` is the filter any rewritten text (the teacher's) must pass:
position words and percentages must be ones the facts support, and the click kind must match.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict

from ibisagent.synth.facts import Region, StateFacts, where_phrase

POSITION_TOKENS = ("upper", "lower", "left", "right", "centre", "center", "top", "bottom", "above", "below")


def _pick(rng: random.Random, options: tuple[str, ...], **kw) -> str:
    return rng.choice(options).format(**kw)


def _about(n: int) -> str:
    return f"about {n}%"


def _target_sentence(rng: random.Random, f: StateFacts) -> str:
    return _pick(
        rng,
        (
            "The {s} lies in {w} and takes up {a} of the image.",
            "I look for the {s}: it is in {w}, covering {a} of the image.",
            "The target, the {s}, sits in {w} and fills {a} of the frame.",
        ),
        s=f.structure,
        w=where_phrase(f.target_where),
        a=_about(f.target_pct),
    )


def _mask_sentence(rng: random.Random, f: StateFacts) -> str:
    if not f.mask_present:
        return _pick(rng, ("There is no mask yet.", "No mask is drawn yet."))
    if f.coverage_pct == 0:
        return f"The green mask covers almost none of the {f.structure}."
    if f.outside_pct == 0:
        return _pick(
            rng,
            (
                "The green mask covers {c} of the {s} and stays inside it.",
                "The mask catches {c} of the {s}, nothing outside it.",
            ),
            s=f.structure,
            c=_about(f.coverage_pct),
        )
    return _pick(
        rng,
        (
            "The green mask covers {c} of the {s}, and {o} of the mask lies outside it.",
            "The current mask catches {c} of the {s}; {o} of its area spills outside the target.",
            "At the moment the mask overlaps {c} of the {s}, with {o} of it outside.",
        ),
        s=f.structure,
        c=_about(f.coverage_pct),
        o=_about(f.outside_pct),
    )


def _rel_words(r: Region) -> str:
    return {"inside": "within the mask's extent", "": ""}.get(r.rel, f"{r.rel} the current mask")


def click_reasoning(rng: random.Random, f: StateFacts, label: int, region: Region, step: int, note: str = "") -> str:
    """Reasoning for the oracle's click: positive into the missed region `region`, negative
    into the extra one. `note` (optional) is put first (e.g. noticing a bad previous click)."""
    parts = [note] if note else []
    if step == 1 or not f.mask_present:
        parts.append(_target_sentence(rng, f))
    parts.append(_mask_sentence(rng, f))
    size = "largest" if region.largest else "widest"
    rel = _rel_words(region)
    rel = f", {rel}" if rel else ""
    if label == 1 and not f.mask_present:
        parts.append(
            _pick(
                rng,
                (
                    "I place a positive point deep inside the {s}, about {d} px from its edge.",
                    "A positive point in the middle of the {s}'s widest part, about {d} px from its boundary, should start a good mask.",
                ),
                s=f.structure,
                d=region.width_px // 2 or 1,
            )
        )
    elif label == 1:
        parts.append(
            _pick(
                rng,
                (
                    "The {z} missed part is in {w}{r}, {a} of the {s} and about {d} px wide.",
                    "The mask misses a region in {w}{r}; it is the {z} gap, {a} of the {s}, about {d} px across.",
                ),
                z=size,
                w=where_phrase(region.where),
                r=rel,
                a=_about(region.share_pct),
                s=f.structure,
                d=region.width_px,
            )
        )
        parts.append(
            _pick(
                rng,
                (
                    "I put a positive point in its middle to add it.",
                    "A positive point in its middle should pull it into the mask.",
                    "So I add a positive point there.",
                ),
            )
        )
    else:
        parts.append(
            _pick(
                rng,
                (
                    "The {z} wrongly included part is in {w}{r}, {a} of the mask and about {d} px wide.",
                    "The mask spills into {w}{r}; this {z} extra region is {a} of the mask, about {d} px across.",
                ),
                z=size,
                w=where_phrase(region.where),
                r=rel,
                a=_about(region.share_pct),
                d=region.width_px,
            )
        )
        parts.append(
            _pick(
                rng,
                (
                    "I place a negative point in its middle to remove it.",
                    "A negative point in its middle should cut it away.",
                    "So I add a negative point there.",
                ),
            )
        )
    return " ".join(parts)


def stop_reasoning(rng: random.Random, f: StateFacts) -> str:
    return " ".join(
        (
            _mask_sentence(rng, f),
            _pick(
                rng,
                (
                    "The mask follows the {s}'s boundary closely enough; no further point is needed.",
                    "What remains are small boundary errors, so I stop here.",
                    "The {s} is well segmented, so I terminate.",
                ),
                s=f.structure,
            ),
        )
    )


def notice_sentence(rng: random.Random, label: int, before: StateFacts, after: StateFacts) -> str:
    """Noticing that the previous (deliberately wrong) click made the mask worse."""
    what = (
        "it now spreads outside the {s} ({o} of the mask is outside, up from {o0})"
        if after.outside_pct > before.outside_pct
        else "it lost part of the {s} (coverage fell from {c0} to {c})"
    )
    return _pick(
        rng,
        (
            "My last {k} point was a mistake: the mask got worse, " + what + ".",
            "That previous {k} point hurt the mask: " + what + ". I need to correct it.",
        ),
        k="positive" if label == 1 else "negative",
        s=after.structure,
        o=_about(after.outside_pct),
        o0=_about(before.outside_pct),
        c=_about(after.coverage_pct),
        c0=_about(before.coverage_pct),
    )


def wrong_click_reasoning(rng: random.Random, f: StateFacts, label: int, where: str) -> str:
    """The (masked-out) reasoning of a deliberately wrong click at position words `where`."""
    first = _mask_sentence(rng, f)
    if label == 1:
        return first + f" I add a positive point in {where_phrase(where)} to extend the mask."
    return first + f" I add a negative point in {where_phrase(where)} to trim the mask."


def discard_reasoning(rng: random.Random, given: StateFacts) -> str:
    """Reasoning for discarding a given mask that outlines something other than the target."""
    return " ".join(
        (
            _target_sentence(rng, given),
            _pick(
                rng,
                (
                    "The given mask sits in {w} and covers only {c} of the {s}; {o} of it lies outside, so it outlines a different structure.",
                    "But the provided mask is in {w}: it catches {c} of the {s} and {o} of it is elsewhere. It does not match the request.",
                ),
                w=where_phrase(given.mask_where),
                s=given.structure,
                c=_about(given.coverage_pct),
                o=_about(given.outside_pct),
            ),
            _pick(rng, ("I discard it and start again.", "I drop this mask and segment from scratch.")),
        )
    )


def absent_reasoning(rng: random.Random, structure: str, region: str, shown: list[str], noun: str) -> str:
    """Why a structure from body region `region` cannot be in an image whose annotated
    structures belong to the regions `shown`."""
    return _pick(
        rng,
        (
            "This {m} shows the {h}, while the {s} belongs to the {r}; it cannot appear here, so there is nothing to segment.",
            "The {s} is found in the {r}, but this {m} is of the {h}. The target is absent, so I answer no without clicking.",
        ),
        m=noun,
        h=" and ".join(shown),
        s=structure,
        r=region,
    )


def presence_reasoning(rng: random.Random, f: StateFacts) -> str:
    """Why the answer to a yes/no presence question is yes (the target is visible)."""
    return _target_sentence(rng, f) + _pick(
        rng, (" So the answer is yes.", " It is present; no segmentation was asked for.")
    )


# -- the filter for rewritten reasoning ------------------------------------------------------
_PCT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_TOKEN = re.compile(r"[a-z]+")


def allowed_from(*facts) -> tuple[set[str], set[int]]:
    """Position tokens and whole-number percentages/pixel sizes that `facts` (StateFacts,
    Region, dicts or strings) support."""
    words: set[str] = set()
    numbers: set[int] = set()

    def visit(v):
        if hasattr(v, "__dataclass_fields__"):
            v = asdict(v)
        if isinstance(v, dict):
            for x in v.values():
                visit(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, bool) or v is None:
            return
        elif isinstance(v, int):
            numbers.update({v, v // 2})
        elif isinstance(v, str):
            words.update(t for t in _TOKEN.findall(v.lower()) if t in POSITION_TOKENS)

    for f in facts:
        visit(f)
    if "centre" in words:
        words.add("center")
    return words, numbers


def check_reasoning(text: str, facts: list, action_kind: str, structure: str, tolerance: int = 3) -> str | None:
    """None when `text` is acceptable reasoning for a step, else why not: it must name
    `structure`, use only position words and percentages the facts support (within
    `tolerance` points), and not name the opposite click kind."""
    if not isinstance(text, str) or not (20 <= len(text.strip()) <= 1500):
        return "empty or too long"
    if "<" in text or ">" in text:
        return "contains tags"
    low = text.lower()
    if structure.lower() not in low:
        return f"does not name the {structure}"
    words, numbers = allowed_from(*facts)
    extra = {t for t in _TOKEN.findall(low) if t in POSITION_TOKENS} - words
    if extra:
        return f"position words not supported by the state: {', '.join(sorted(extra))}"
    for m in _PCT.finditer(low):
        v = float(m.group(1))
        if not any(abs(v - n) <= tolerance for n in numbers):
            return f"percentage {m.group(0)} not supported by the state"
    opposite = {"positive": "negative point", "negative": "positive point"}.get(action_kind)
    if opposite and opposite in low:
        return f"mentions a {opposite} but the action is {action_kind}"
    if action_kind == "stop" and re.search(r"\b(positive|negative) point\b", low):
        return "mentions a click but the action is a stop"
    return None

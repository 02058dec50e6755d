"""Chats in the released prompt format, shared by the VLM policies and the SFT data builder.

One decision step of the released model sees [system prompt, user turn] (history off) or the
whole conversation so far (history on). A user turn is the image (the original at an initial
step, the mask overlay afterwards) followed by the text of `protocol.first_turn_text` /
`protocol.refinement_turn_text`, which begin with the placeholder `<image>`. The image part takes
the placeholder's place, so each image is tokenised once and no literal `<image>` text reaches the
model: that is how the release was trained (LLaMA-Factory and verl both replace the placeholder
by the image), while the released inference script sent the placeholder text beside the image.
Messages use the Hugging Face content layout:
`{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ...}]}`; the
images travel beside them, in order, as PIL RGB images capped at `max_pixels` (the release
trained with at most 512 x 512 = 262144 pixels).

Earlier turns are rebuilt from the `Episode` alone (masks are stored per step), so a policy
keeps no hidden state and an oracle episode turns into a training chat with the same code.
"""

from __future__ import annotations

import math

import numpy as np

from ibisagent.env.episode import Episode
from ibisagent.env.protocol import SYSTEM_PROMPT, first_turn_text, refinement_turn_text
from ibisagent.io.rle import rle_decode
from ibisagent.overlay import OVERLAY_ALPHA, OVERLAY_COLOR, render_overlay

MAX_PIXELS = 512 * 512
IMAGE_PLACEHOLDER = "<image>"  # the image's place in the protocol text (LLaMA-Factory / verl data)


def resolve_image_placeholders(parts: list[dict]) -> list[dict]:
    """Content parts with the `<image>` placeholders of the text resolved, so that each image
    is tokenised once: in a message that already has image parts the placeholders are the
    duplicates (the released chat text carries `<image>` beside the image part) and are dropped;
    otherwise each placeholder becomes an image part at its place (LLaMA-Factory's rule)."""
    if not any(c.get("type") == "text" and IMAGE_PLACEHOLDER in (c.get("text") or "") for c in parts):
        return parts
    keep_images = any(c.get("type") == "image" for c in parts)
    out: list[dict] = []
    for c in parts:
        if c.get("type") != "text" or IMAGE_PLACEHOLDER not in (c.get("text") or ""):
            out.append(c)
            continue
        pieces = c["text"].split(IMAGE_PLACEHOLDER)
        for k, piece in enumerate(pieces):
            if k and not keep_images:
                out.append({"type": "image"})
            if piece:
                out.append({**c, "text": piece})
    return out


def cap_image(image: np.ndarray, max_pixels: int = MAX_PIXELS):
    """H x W x 3 uint8 -> PIL RGB image, shrunk (aspect kept, area filter) to at most `max_pixels`."""
    from PIL import Image

    pil = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    w, h = pil.size
    if max_pixels and w * h > max_pixels:
        scale = math.sqrt(max_pixels / (w * h))
        pil = pil.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BOX)
    return pil


def masks_before_steps(episode: Episode) -> list[np.ndarray | None]:
    """For each step i of `episode` (and one past the end), the mask the policy saw before it:
    H x W bool, or None when it saw the original image (an initial step without a given mask)."""
    cur = None if episode.init_mask is None else rle_decode(episode.init_mask)
    out = [cur]
    for s in episode.steps:
        if s.mask is not None:
            cur = rle_decode(s.mask)
        out.append(cur)
    return out


def user_turn(text: str) -> dict:
    """The image, then `text` without its `<image>` placeholder (the image part stands for it)."""
    return {"role": "user", "content": resolve_image_placeholders([{"type": "image"}, {"type": "text", "text": text}])}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def system_turn(prompt: str = SYSTEM_PROMPT) -> dict:
    return {"role": "system", "content": [{"type": "text", "text": prompt}]}


def step_view(original: np.ndarray, mask: np.ndarray | None, query: str, step: int) -> tuple[np.ndarray, str]:
    """(image, text) of the user turn before decision `step` (0-based), as the environment shows it."""
    if step == 0 and mask is None:
        return original, first_turn_text(query)
    return render_overlay(original, mask, OVERLAY_COLOR, OVERLAY_ALPHA), refinement_turn_text(query)


def episode_chat(
    original: np.ndarray,
    episode: Episode,
    upto: int | None = None,
    history: bool = False,
    max_pixels: int = MAX_PIXELS,
    current: tuple[np.ndarray, str] | None = None,
) -> tuple[list[dict], list]:
    """(messages, images) for deciding step `upto` (0-based; default: the next step).

    history=False: [system, user(step upto)]. history=True: [system, user 0, assistant 0, ...,
    user upto]. `current` overrides the last user turn's (image, text), e.g. with the exact
    observation the environment produced.
    """
    upto = len(episode.steps) if upto is None else upto
    before = masks_before_steps(episode)
    messages, images = [system_turn()], []
    for i in range(0 if history else upto, upto + 1):
        if i == upto and current is not None:
            img, text = current
        else:
            img, text = step_view(original, before[i], episode.query, i)
        messages.append(user_turn(text))
        images.append(cap_image(img, max_pixels))
        if i < upto:
            messages.append(assistant_turn(episode.steps[i].response))
    return messages, images


def training_chats(
    original: np.ndarray,
    episode: Episode,
    history: bool = False,
    train_flags: list[bool] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> list[dict]:
    """Training rows from a finished episode: {"messages", "images", "train"}.

    `train` has one bool per assistant turn of the row (False = masked out of the loss, e.g. a
    deliberately wrong action). history=False gives one row per step (the released inference
    layout); history=True one row per episode with every turn.
    """
    flags = list(train_flags) if train_flags is not None else [True] * len(episode.steps)
    if len(flags) != len(episode.steps):
        raise ValueError(f"{len(flags)} train flags for {len(episode.steps)} steps")
    if history:
        n = len(episode.steps)
        msgs, imgs = episode_chat(original, episode, upto=n - 1, history=True, max_pixels=max_pixels)
        msgs.append(assistant_turn(episode.steps[-1].response))
        return [{"messages": msgs, "images": imgs, "train": flags}]
    rows = []
    for i, step in enumerate(episode.steps):
        msgs, imgs = episode_chat(original, episode, upto=i, history=False, max_pixels=max_pixels)
        msgs.append(assistant_turn(step.response))
        rows.append({"messages": msgs, "images": imgs, "train": [flags[i]]})
    return rows

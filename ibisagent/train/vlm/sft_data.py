"""SFT rows and the collator that masks the loss.

A row is one chat in the Hugging Face layout:
    {"messages": [{"role": "system"|"user"|"assistant", "content": [{"type": "image"} |
                   {"type": "text", "text": ...}, ...]}, ...],
     "images":   [PIL image or path, ...]   (one per {"type": "image"} part, in order),
     "train":    [bool, ...]                (one per assistant turn; False = no loss)}
An assistant message may instead carry its own `"train": false`. String contents are accepted
too. Text may carry `<image>` placeholders (the released data and `ibisagent synth` write them):
each stands for the next image, and where a message also has an image part it is the same image,
so the placeholder is dropped: every image is tokenised exactly once and no literal `<image>`
text reaches the model (as LLaMA-Factory, which trained the release, does). Without
placeholders or parts, each user turn gets one image, in order.

Loss: only the tokens of assistant turns whose flag is True carry labels (their text and the
closing `<|im_end|>`); the system prompt, every user turn (the tool's observations: the overlay
image and the refinement text) and the deliberately wrong turns get -100.

Sources: `oracle_rows` drives the real environment with the reference click simulator;
`load_rows` reads a `datasets` folder (`save_to_disk`) or a JSONL file of rows, with image paths
relative to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.policies.vlm_chat import (
    IMAGE_PLACEHOLDER,
    MAX_PIXELS,
    cap_image,
    resolve_image_placeholders,
    training_chats,
)

IGNORE = -100


def _texts(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(c.get("text") or "" for c in content if c.get("type") == "text")


# -- rows ----------------------------------------------------------------------------------
def turn_flags(row: dict, msgs: list[dict]) -> list[bool]:
    """One "train" flag per assistant turn: the row's list, else each assistant message's own
    (default True); a list of the wrong length is a one-line error."""
    turns = [m for m in msgs if m["role"] == "assistant"]
    flags = row.get("train")
    if flags is None:
        flags = [bool(m.get("train", True)) for m in turns]
    if len(flags) != len(turns):
        raise IbisInputError("row", f"{len(flags)} train flags for {len(turns)} assistant turns")
    return [bool(f) for f in flags]


def normalise_row(row: dict, root: Path | None = None, max_pixels: int = MAX_PIXELS) -> dict:
    """A row in the canonical layout (list contents, PIL images, one flag per assistant turn)."""
    from PIL import Image

    msgs = [dict(m) for m in row["messages"]]
    images = list(row.get("images") or [])
    has_parts = any(
        isinstance(m["content"], list) and any(c.get("type") == "image" for c in m["content"]) for m in msgs
    )
    has_placeholders = any(IMAGE_PLACEHOLDER in _texts(m["content"]) for m in msgs)
    for m in msgs:
        content = m["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
            if m["role"] == "user" and images and not has_parts and not has_placeholders:
                content.insert(0, {"type": "image"})
        else:
            content = [{k: v for k, v in c.items() if v is not None} for c in content]
        m["content"] = resolve_image_placeholders(content)
    n_parts = sum(1 for m in msgs for c in m["content"] if c.get("type") == "image")
    if n_parts != len(images):
        raise IbisInputError("row", f"{n_parts} image parts but {len(images)} images")
    loaded = []
    for img in images:
        if isinstance(img, (str, Path)):
            p = Path(img) if root is None or Path(img).is_absolute() else root / img
            if not p.exists():
                raise IbisInputError(p, "image of an SFT row not found")
            img = Image.open(p)
        elif isinstance(img, dict) and img.get("path"):  # datasets' Image feature without decoding
            img = Image.open(img["path"])
        loaded.append(cap_image(np.asarray(img.convert("RGB")), max_pixels))
    flags = turn_flags(row, msgs)
    for m in msgs:
        m.pop("train", None)
    return {"messages": msgs, "images": loaded, "train": flags}


def load_rows(path: str | Path, max_rows: int | None = None) -> list[dict]:
    """Rows from a `datasets.save_to_disk` folder or a .jsonl file (raw; see `normalise_row`)."""
    path = Path(path)
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    if path.is_dir() and any((path / m).exists() for m in markers):
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        if hasattr(ds, "keys"):  # a DatasetDict: take its train split
            ds = ds["train"] if "train" in ds else ds[next(iter(ds.keys()))]
        rows = [dict(r) for r in ds.select(range(min(len(ds), max_rows or len(ds))))]
    elif path.suffix == ".jsonl" and path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:max_rows]
    else:
        raise IbisInputError(path, "not a datasets folder (save_to_disk) nor a .jsonl file of SFT rows")
    if not rows:
        raise IbisInputError(path, "no SFT rows")
    return [{**r, "_root": str(path if path.is_dir() else path.parent)} for r in rows]


def _image_count(message: dict, marked: bool, has_images: bool) -> int:
    """Images that one message consumes from its row's `images` (the rules of `normalise_row`)."""
    content = message["content"]
    if isinstance(content, str):
        n = content.count(IMAGE_PLACEHOLDER)
        return n if marked else int(message["role"] == "user" and has_images)
    parts = sum(1 for c in content if c.get("type") == "image")
    return parts or sum((c.get("text") or "").count(IMAGE_PLACEHOLDER) for c in content if c.get("type") == "text")


def single_turn_rows(row: dict) -> list[dict]:
    """One row per trained assistant turn: [system, the user turn before it, the turn] with that
    user turn's images, as the released model was trained and runs (no history). Images stay
    as they are (paths or images), so this is cheap on a large dataset."""
    msgs = list(row["messages"])
    images = list(row.get("images") or [])
    marked = any(
        IMAGE_PLACEHOLDER in _texts(m["content"])
        or (isinstance(m["content"], list) and any(c.get("type") == "image" for c in m["content"]))
        for m in msgs
    )
    flags = turn_flags(row, msgs)
    system = [m for m in msgs[:1] if m["role"] == "system"]
    out, used, last_user, turn = [], 0, None, 0
    for m in msgs[len(system) :]:
        n = _image_count(m, marked, bool(images))
        if m["role"] == "user":
            last_user = (m, images[used : used + n])
        used += n
        if m["role"] == "assistant":
            if flags[turn] and last_user is not None:
                user, imgs = last_user
                rest = {k: v for k, v in row.items() if k not in ("messages", "images", "train")}
                out.append(rest | {"messages": [*system, user, m], "images": imgs, "train": [True]})
            turn += 1
    return out


def shrink(image: np.ndarray, gt: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask resized so the longer side is at most `max_side` (nearest for the mask)."""
    import cv2

    H, W = image.shape[:2]
    if not max_side or max(H, W) <= max_side:
        return image, gt
    s = max_side / max(H, W)
    size = (max(1, round(W * s)), max(1, round(H * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    m = cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return img, m


def oracle_rows(
    pairs: str | Path,
    tool,
    max_samples: int | None = None,
    history: bool = False,
    iou_threshold: float = 0.8,
    max_steps: int = 20,
    max_side: int | None = None,
    max_pixels: int = MAX_PIXELS,
    seed: int = 0,
) -> list[dict]:
    """Rows from real episodes: the reference click simulator drives `IbisEnv` over the samples
    of a pairs.csv (referring queries from `data.queries`). Every turn is trained."""
    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.data.queries import make_query
    from ibisagent.env.env import IbisEnv
    from ibisagent.policies.oracle import OraclePolicy
    from ibisagent.policies.runner import run_episode

    samples = [s for s in read_pairs_csv(pairs) if not s.negative and s.mask is not None][:max_samples]
    env = IbisEnv(tool, max_steps=max_steps)
    rows = []
    for s in samples:
        image, gt = s.load()
        image, gt = shrink(image, gt, max_side)
        query = make_query(s, "referring", seed).text
        ep = run_episode(env, OraclePolicy(iou_threshold), image, query, gt_mask=gt, image_name=s.id)
        rows += training_chats(image, ep, history=history, max_pixels=max_pixels)
    return rows


# -- labels --------------------------------------------------------------------------------
def assistant_spans(ids: list[int], tokenizer) -> list[tuple[int, int]]:
    """[(start, end)] token ranges of assistant turns: from the first token after
    `<|im_start|>assistant\\n` to the closing `<|im_end|>` included."""
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    spans, i, n = [], 0, len(ids)
    while i < n:
        if ids[i] != start_id:
            i += 1
            continue
        j = i + 1
        while j < n and "\n" not in tokenizer.decode(ids[i + 1 : j + 1]):
            j += 1
        role = tokenizer.decode(ids[i + 1 : j + 1]).strip()
        k = j + 1
        while k < n and ids[k] != end_id:
            k += 1
        if role == "assistant":
            spans.append((j + 1, min(k, n - 1)))
        i = k
    return spans


def label_tokens(input_ids, attention_mask, flags: list[list[bool]], tokenizer):
    """Labels (B x T, IGNORE outside trained assistant turns) for a right-padded batch."""
    import torch

    labels = torch.full_like(input_ids, IGNORE)
    for b in range(input_ids.shape[0]):
        n = int(attention_mask[b].sum())
        spans = assistant_spans(input_ids[b, :n].tolist(), tokenizer)
        if len(spans) != len(flags[b]):
            raise ValueError(f"row {b}: {len(spans)} assistant turns in the tokens, {len(flags[b])} flags")
        for (s, e), train in zip(spans, flags[b]):
            if train:
                labels[b, s : e + 1] = input_ids[b, s : e + 1]
    return labels


class ChatCollator:
    """Rows -> model inputs with `labels` (right padding). Rows are normalised on the fly.
    With `table`, the items are {"row": i} and the rows are `table[i]`."""

    def __init__(self, processor, max_pixels: int = MAX_PIXELS, table: list[dict] | None = None):
        self.processor, self.max_pixels, self.table = processor, max_pixels, table

    def __call__(self, rows: list[dict]) -> dict:
        if self.table is not None:
            rows = [self.table[int(r["row"])] for r in rows]
        rows = [normalise_row(r, Path(r["_root"]) if r.get("_root") else None, self.max_pixels) for r in rows]
        texts = [self.processor.apply_chat_template(r["messages"], tokenize=False) for r in rows]
        images = [img for r in rows for img in r["images"]]
        self.processor.tokenizer.padding_side = "right"
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        batch["labels"] = label_tokens(
            batch["input_ids"], batch["attention_mask"], [r["train"] for r in rows], self.processor.tokenizer
        )
        return dict(batch)

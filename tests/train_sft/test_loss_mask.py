"""The loss mask, proven on the tokens: only trained assistant turns (and their <|im_end|>) carry labels."""

from __future__ import annotations

import pytest

from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import format_response
from ibisagent.errors import IbisInputError
from ibisagent.policies.human import HumanPolicy
from ibisagent.policies.runner import run_episode
from ibisagent.policies.vlm_chat import training_chats
from ibisagent.train.vlm.sft_data import IGNORE, ChatCollator, normalise_row


@pytest.fixture(scope="module")
def processor(tiny_base):
    from ibisagent.policies.vlm_hf import load_processor

    return load_processor(tiny_base, "qwen2_5_vl")


def test_labels_cover_exactly_the_trained_turns(tool, demo_samples, processor):
    import cv2

    image, _ = demo_samples[0].load()
    image = cv2.resize(image, (64, 64))
    # a self-correction: a wrong click (masked), the correction, the stop
    ep = run_episode(IbisEnv(tool), HumanPolicy(commands=["n 0.5,0.5", "p 0.5,0.5", "stop"]), image, "Segment it")
    flags = [False, True, True]
    (row,) = training_chats(image, ep, history=True, train_flags=flags)
    batch = ChatCollator(processor)([row, {**row, "train": [True, True, True]}])
    tok = processor.tokenizer
    ids, labels = batch["input_ids"], batch["labels"]
    kept = [t for t, lab in zip(ids[0].tolist(), labels[0].tolist()) if lab != IGNORE]
    wanted = "".join(s.response + "<|im_end|>" for s, f in zip(ep.steps, flags) if f)
    assert tok.decode(kept) == wanted
    assert "Negative Point" not in tok.decode(kept) and "refinement step" not in tok.decode(kept)
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    assert (ids[0] == image_pad).sum() > 0 and not ((labels[0] != IGNORE) & (ids[0] == image_pad)).any()
    # the released user text starts with "<image>" beside the image part: tokenised once, as the image
    assert "<image>" not in tok.decode(ids[0])
    assert int((ids[0] == tok.convert_tokens_to_ids("<|vision_start|>")).sum()) == len(row["images"]) == 3
    # labels equal the input where kept; the second row trains all three turns; padding is never labelled
    assert ((labels == ids) | (labels == IGNORE)).all()
    all3 = tok.decode([t for t, lab in zip(ids[1].tolist(), labels[1].tolist()) if lab != IGNORE])
    assert all3 == "".join(s.response + "<|im_end|>" for s in ep.steps)
    assert not ((batch["attention_mask"] == 0) & (labels != IGNORE)).any()


def test_row_layouts_and_errors(processor, tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (9, 9, 9)).save(tmp_path / "a.png")
    turn = format_response("ok", "positive", 0.5, 0.5)
    raw = {  # string contents, per-message flags, image paths relative to the rows file
        "messages": [
            {"role": "user", "content": "<image>Segment the liver"},
            {"role": "assistant", "content": turn, "train": False},
        ],
        "images": ["a.png"],
    }
    row = normalise_row(raw, root=tmp_path)
    assert row["train"] == [False] and row["images"][0].size == (40, 30)
    assert row["messages"][0]["content"][0] == {"type": "image"}
    batch = ChatCollator(processor)([{**raw, "_root": str(tmp_path)}])
    assert (batch["labels"] == IGNORE).all()
    # LLaMA-Factory placeholders: each "<image>" is the next image, at its place
    two = normalise_row(
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "<image>a<image>b"}]}],
            "images": ["a.png"] * 2,
        },
        root=tmp_path,
    )
    assert two["messages"][0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "a"},
        {"type": "image"},
        {"type": "text", "text": "b"},
    ]
    with pytest.raises(IbisInputError, match="not found"):
        normalise_row(raw, root=tmp_path / "elsewhere")
    with pytest.raises(IbisInputError, match="2 train flags for 1"):
        normalise_row({**raw, "train": [True, True]}, root=tmp_path)
    with pytest.raises(IbisInputError, match="image parts"):
        normalise_row({**raw, "images": ["a.png", "a.png"]}, root=tmp_path)

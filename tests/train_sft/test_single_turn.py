"""Synth's chat rows become one row per trained turn (as the released model trains and runs), and
the small VLM size is what its configs say."""

from __future__ import annotations

import pytest

from ibisagent.env.protocol import SYSTEM_PROMPT
from ibisagent.train.vlm.sft_data import single_turn_rows


def _chat(train=(True, False, True)):
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
    for k, flag in enumerate(train):
        msgs.append({"role": "user", "content": f"<image>turn {k}"})
        msgs.append({"role": "assistant", "content": f"answer {k}", "train": flag})
    return {"id": "x", "messages": msgs, "images": [f"img{k}.png" for k in range(len(train))]}


def test_one_row_per_trained_turn_with_its_own_image():
    rows = single_turn_rows(_chat())
    assert [r["images"] for r in rows] == [["img0.png"], ["img2.png"]]  # the untrained turn 1 is dropped
    assert [[m["content"] for m in r["messages"]] for r in rows] == [
        [SYSTEM_PROMPT, "<image>turn 0", "answer 0"],
        [SYSTEM_PROMPT, "<image>turn 2", "answer 2"],
    ]
    assert all(r["train"] == [True] and r["id"] == "x" for r in rows)


def test_image_parts_and_row_level_flags():
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "r"}]},
            {"role": "assistant", "content": "b"},
        ],
        "images": ["a.png", "b.png"],
        "train": [False, True],
    }
    (only,) = single_turn_rows(row)
    assert only["images"] == ["b.png"] and only["messages"][0]["content"][1]["text"] == "r"
    with pytest.raises(Exception, match="3 train flags for 2"):
        single_turn_rows(row | {"train": [True, True, True]})


def test_small_size_caps_images_and_compresses_the_prompt():
    pytest.importorskip("transformers")
    import numpy as np

    from ibisagent.policies.vlm_chat import cap_image
    from ibisagent.testing.tiny_vlm import SIZES, build_tiny_vlm

    model, processor = build_tiny_vlm("qwen2_5_vl", **SIZES["small"])
    n = sum(p.numel() for p in model.parameters())
    assert 2e6 < n < 8e6  # "a few million parameters"
    assert len(processor.tokenizer(SYSTEM_PROMPT).input_ids) < 300
    image = cap_image(np.zeros((512, 512, 3), np.uint8))
    batch = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image], return_tensors="pt")
    grid = batch["image_grid_thw"][0].tolist()  # (t, h, w) patches of 14 px before the 2 x 2 merge
    assert grid[1] * grid[2] * 14 * 14 <= SIZES["small"]["max_pixels"]

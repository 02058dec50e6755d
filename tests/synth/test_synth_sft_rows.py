"""Synthesized chat rows through the SFT loader: every image is tokenised exactly once.

The export writes the released text (`<image>` + query) and one image per user turn; the loader
must not leave the placeholder as literal text beside the image's own tokens."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    pytest.importorskip("transformers")
    from ibisagent.policies.vlm_hf import load_processor
    from ibisagent.testing.tiny_vlm import save_tiny_vlm

    return load_processor(save_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm") / "m", "qwen2_5_vl"), "qwen2_5_vl")


def test_synth_rows_tokenise_one_image_per_image(synth_run, processor, tmp_path):
    pytest.importorskip("datasets")
    from ibisagent.synth.export import write_chat_dataset
    from ibisagent.train.vlm.sft_data import IGNORE, ChatCollator, load_rows

    out, _, trajs = synth_run
    write_chat_dataset(trajs, out, tmp_path / "chat")
    rows = load_rows(tmp_path / "chat")
    kinds = {r["kind"] for r in rows}
    assert {"segment", "self_correction", "discard"} <= kinds
    tok = processor.tokenizer
    start, pad = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size
    collate = ChatCollator(processor)
    for row in rows[:6]:
        batch = collate([row])
        ids = batch["input_ids"][0]
        n_images = len(row["images"])
        assert n_images == sum(m["content"].count("<image>") for m in row["messages"]) > 0
        assert int((ids == start).sum()) == n_images
        assert batch["image_grid_thw"].shape[0] == n_images
        assert int((ids == pad).sum()) == int(batch["image_grid_thw"].prod(-1).sum()) // merge**2
        text = tok.decode(ids)
        assert "<image>" not in text
        # each user turn: the image, then the text straight after it
        for m in row["messages"]:
            if m["role"] == "user":
                assert "<|vision_end|>" + m["content"].replace("<image>", "") + "<|im_end|>" in text
        labelled = tok.decode([t for t, lab in zip(ids.tolist(), batch["labels"][0].tolist()) if lab != IGNORE])
        assert "<image>" not in labelled and "<|image_pad|>" not in labelled

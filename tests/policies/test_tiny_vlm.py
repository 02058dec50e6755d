"""The tiny offline VLM: both families build, save, reload like a checkpoint and generate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ibisagent.errors import IbisInputError


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_tiny_checkpoint_loads_and_generates(tiny_vlm_dirs, family):
    import torch

    from ibisagent.policies.vlm_chat import cap_image, system_turn, user_turn
    from ibisagent.policies.vlm_hf import load_vlm
    from ibisagent.testing.tiny_vlm import SPECIAL_TOKENS

    path = tiny_vlm_dirs[family]
    assert json.loads((path / "config.json").read_text())["model_type"] == family
    size_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    assert size_mb < 5, size_mb
    model, processor, fam = load_vlm(path, device="cpu")
    assert fam == family and not hasattr(processor, "video_processor")
    tok = processor.tokenizer
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in SPECIAL_TOKENS)
    text = "<think>\nx\n</think>\n<action>\nPositive Point (0.4120, 0.5531)\n</action> ü"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: any text round-trips
    # a large image is capped at 512 x 512 pixels before the vision tower
    big = cap_image(np.zeros((1024, 2048, 3), np.uint8))
    assert big.size[0] * big.size[1] <= 512 * 512 and big.size == (724, 362)
    msgs = [system_turn(), user_turn("<image>Segment the liver")]
    prompt = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # the image part takes the place of the protocol's "<image>" placeholder: one image, no literal tag
    assert "<|vision_start|><|image_pad|><|vision_end|>Segment the liver<|im_end|>" in prompt
    inputs = processor(text=[prompt], images=[big], return_tensors="pt")
    patch = 14 if family == "qwen2_5_vl" else 16
    assert int(inputs["image_grid_thw"][0].prod()) * patch * patch <= 512 * 512
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_load_vlm_rejects_bad_folders(tmp_path):
    from ibisagent.policies.vlm_hf import load_vlm

    with pytest.raises(IbisInputError, match="no such model folder"):
        load_vlm(tmp_path / "missing")
    with pytest.raises(IbisInputError, match="no config.json"):
        load_vlm(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(IbisInputError, match="not supported"):
        load_vlm(tmp_path)

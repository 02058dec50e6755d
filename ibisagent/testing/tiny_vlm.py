"""A randomly initialised, few-hundred-kB Qwen2.5-VL or Qwen3-VL with its tokenizer and processor,
built fully offline, so every VLM path (policy, batching, SFT, adapters, merge) runs for real on CPU.

Two sizes (`SIZES`): "tiny" (hidden 64, 2 layers; the tests' and smoke runs' model, ~0.3 M
parameters) and "small" (hidden 256, 4 layers, vision hidden 128 at depth 4, images at most
168 x 168 pixels, a BPE vocabulary of up to 2,048 tokens (927 learned from the protocol text);
4.0 M parameters): the model that `ibisagent/train/configs/sft_small.yaml` and `rl_small.yaml`
train from scratch on a 2-core CPU in about an hour. Only the config differs from the 7B recipe: the same chat template, protocol, loss
masks and code paths.

The tokenizer is a byte-level BPE (any text round-trips) trained in a fraction of a second on
the protocol's own text, with the Qwen special tokens (`<|im_start|>`, `<|im_end|>`,
`<|vision_start|>`, `<|image_pad|>`, ...) and the Qwen2-VL chat template. The folder written by
`save_tiny_vlm` loads with `vlm_hf.load_vlm` exactly like a released checkpoint.

    python -m ibisagent.testing.tiny_vlm runs/tiny-qwen25vl --family qwen2_5_vl
    python -m ibisagent.testing.tiny_vlm runs/small-qwen25vl --size small
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ibisagent.env.protocol import SYSTEM_PROMPT, format_response, refinement_turn_text

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen2-VL / Qwen2.5-VL chat template (images as <|vision_start|><|image_pad|><|vision_end|>).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    """Text the tiny BPE learns its merges from: the prompts and well-formed turns."""
    turns = [
        format_response(
            "There is no mask yet; I place a positive point deep inside the target.", "positive", 0.4120, 0.5531
        ),
        format_response("The mask spills outside the target.", "negative", 0.7031, 0.2969),
        format_response("The mask overlaps the target with IoU 0.85, which meets the goal.", "stop", answer="Done."),
    ]
    digits = " ".join(f"({i / 97:.4f}, {1 - i / 89:.4f})" for i in range(60))
    return [SYSTEM_PROMPT, refinement_turn_text("Segment the liver"), digits, *turns] * 2


# Model sizes: keyword arguments of `build_tiny_vlm`.
SIZES = {
    "tiny": dict(hidden=64, layers=2, vision_depth=2),
    "small": dict(
        hidden=256,
        layers=4,
        vision_depth=4,
        vision_hidden=128,
        init_range=0.02,  # trained fully from scratch, not through LoRA: the usual scale
        vocab_size=2048,  # room for whole protocol words: the system prompt in 262 tokens, not 401
        max_pixels=168 * 168,  # 12 x 12 patches of 14 px, 36 image tokens after the 2 x 2 merge
    ),
}


def build_tokenizer(vocab_size: int = 640):
    """Byte-level BPE tokenizer with the Qwen special tokens and chat template (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN_VL_CHAT_TEMPLATE
    return fast


def build_tiny_vlm(
    family: str = "qwen2_5_vl",
    hidden: int = 64,
    layers: int = 2,
    vision_depth: int = 2,
    init_range: float = 0.1,
    seed: int = 0,
    vision_hidden: int = 32,
    vocab_size: int = 640,
    max_pixels: int | None = None,
):
    """(model, processor) of a random tiny `family` ("qwen2_5_vl" or "qwen3_vl") VLM on CPU.

    init_range: std of the language model's random weights; larger than the usual 0.02 so that
    LoRA alone can make the untrained LM head's logits decisive in a few steps. max_pixels: the
    processor's image size cap (None: the release's 512 x 512)."""
    import torch

    from ibisagent.policies.vlm_hf import families, image_only_processor

    if family not in families():
        raise ValueError(f"unknown family {family!r}; known: {', '.join(families())}")
    tokenizer = build_tokenizer(vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = 4
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(hidden // heads)},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        initializer_range=init_range,
    )
    vision = dict(
        depth=vision_depth,
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_heads=2,
        out_hidden_size=hidden,
    )
    tokens = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config_cls, model_cls, _, patch = families()[family]
    if family == "qwen2_5_vl":
        vision.update(fullatt_block_indexes=[vision_depth - 1], window_size=112, patch_size=patch)
    else:
        text.update(head_dim=hidden // heads)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision.update(deepstack_visual_indexes=[vision_depth - 1], num_position_embeddings=64, patch_size=patch)
    config = config_cls(text_config=text, vision_config=vision, **tokens)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    cap = {"max_pixels": max_pixels} if max_pixels else {}
    return model, image_only_processor(family, tokenizer=tokenizer, **cap)


def _mrope(head_dim: int) -> list[int]:
    """Multimodal RoPE sections (t, h, w) summing to head_dim / 2."""
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def save_tiny_vlm(out: str | Path, family: str = "qwen2_5_vl", **kwargs) -> Path:
    """Build and save a tiny VLM folder (config, weights, tokenizer, processor, chat template)."""
    model, processor = build_tiny_vlm(family, **kwargs)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES))
    ap.add_argument("--hidden", type=int, help="override the size's hidden width")
    ap.add_argument("--layers", type=int, help="override the size's layer count")
    args = ap.parse_args()
    kwargs = dict(SIZES[args.size])
    kwargs.update({k: v for k, v in (("hidden", args.hidden), ("layers", args.layers)) if v is not None})
    print(save_tiny_vlm(args.out, args.family, **kwargs))


if __name__ == "__main__":
    main()

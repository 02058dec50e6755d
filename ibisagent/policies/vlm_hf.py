"""A `transformers` policy for Qwen2.5-VL / Qwen3-VL checkpoints from a local folder ("hf:PATH").

PATH is a full checkpoint (config.json + weights + tokenizer/processor files, e.g. the released
`qwen2_5vl-7b-RL`) or a LoRA adapter folder (adapter_config.json; the base comes from its
`base_model_name_or_path` or the `base=` argument). Prompts follow the released format
(`vlm_chat.episode_chat`); images are capped at 512 x 512 pixels; history off (as released) or
on; greedy (as released) or sampled; `act_batch` generates for several episodes at once (left
padding). The processor is built from the tokenizer and the PIL image processor only (no video
processor: it would need torchvision), which is all a still-image agent needs.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.errors import IbisInputError
from ibisagent.policies.base import Policy
from ibisagent.policies.vlm_chat import MAX_PIXELS, episode_chat


@functools.cache
def families() -> dict:
    """{family: (config class, model class, processor class, vision patch size in pixels)}."""
    import transformers as tf

    return {
        "qwen2_5_vl": (tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLProcessor, 14),
        "qwen3_vl": (tf.Qwen3VLConfig, tf.Qwen3VLForConditionalGeneration, tf.Qwen3VLProcessor, 16),
    }


def image_only_processor(
    family: str, tokenizer, image_processor=None, chat_template: str | None = None, max_pixels: int = MAX_PIXELS
):
    """The family's processor with the tokenizer and the PIL image processor (images resized to
    at most `max_pixels` pixels), without video."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    base = families()[family][2]
    patch = families()[family][3]
    if image_processor is None:
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=(2 * patch) ** 2, max_pixels=max_pixels
        )

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    cls = type(base.__name__, (base,), {"__init__": __init__, "__module__": __name__})
    template = chat_template or getattr(tokenizer, "chat_template", None)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=template)


def checkpoint_family(path: Path) -> str:
    """ "qwen2_5_vl" or "qwen3_vl" from PATH/config.json (clear error otherwise)."""
    cfg = path / "config.json"
    if not cfg.exists():
        raise IbisInputError(path, "no config.json: not a transformers checkpoint folder")
    model_type = json.loads(cfg.read_text()).get("model_type", "")
    if model_type not in families():
        raise IbisInputError(
            path, f"model_type {model_type!r} is not supported; use a Qwen2.5-VL or Qwen3-VL checkpoint"
        )
    return model_type


def _chat_template(path: Path, tokenizer) -> str | None:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").exists():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


def load_processor(path: str | Path, family: str):
    """Image-only processor from a checkpoint folder (tokenizer files + image processor config)."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    template = _chat_template(path, tokenizer)
    if template is None:
        raise IbisInputError(path, "no chat template (tokenizer_config, chat_template.jinja or chat_template.json)")
    return image_only_processor(family, tokenizer, image_processor, template)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_vlm(path: str | Path, base: str | Path | None = None, device: str = "auto", dtype: str = "auto"):
    """(model, processor, family) from a checkpoint or LoRA adapter folder; model in eval mode."""
    import torch

    path = Path(path)
    if not path.is_dir():
        raise IbisInputError(path, "no such model folder")
    adapter = None
    if (path / "adapter_config.json").exists():
        adapter = path
        base = base or json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base or not Path(base).is_dir():
            raise IbisInputError(path, f"the adapter's base model {base!r} is not a local folder; pass base=")
        path = Path(base)
    family = checkpoint_family(path)
    device = resolve_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    model = families()[family][1].from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    proc_dir = adapter if adapter is not None and (adapter / "tokenizer_config.json").exists() else path
    processor = load_processor(proc_dir, family)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval(), processor, family


class HFPolicy(Policy):
    """Drives the environment with a local Qwen-VL checkpoint (optionally + LoRA adapter).

    history: False = [system, current user turn] per step (as released); True = the whole chat.
    do_sample False = greedy (as released); True uses temperature / top_p (seeded by `seed`).
    """

    name = "hf"

    def __init__(
        self,
        path: str | Path,
        base: str | Path | None = None,
        history: bool = False,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 512,
        max_pixels: int = MAX_PIXELS,
        device: str = "auto",
        dtype: str = "auto",
        seed: int | None = None,
        model=None,
        processor=None,
    ):
        if model is None:
            model, processor, _ = load_vlm(path, base=base, device=device, dtype=dtype)
        self.model, self.processor = model, processor
        self.history, self.do_sample = history, do_sample
        self.temperature, self.top_p = temperature, top_p
        self.max_new_tokens, self.max_pixels, self.seed = max_new_tokens, max_pixels, seed
        self.name = f"hf:{Path(path).name}" if path else "hf"
        self.last_stats: dict = {}

    def prompt(self, obs: Observation, episode: Episode) -> tuple[list[dict], list]:
        """(messages, PIL images) of this step, in the released format."""
        return episode_chat(
            obs.original, episode, history=self.history, max_pixels=self.max_pixels, current=(obs.image, obs.text)
        )

    def act(self, obs: Observation, episode: Episode) -> str:
        return self.act_batch([(obs, episode)])[0]

    def act_batch(self, items: list[tuple[Observation, Episode]]) -> list[str]:
        """One generate() call for all items (left padded); returns the decoded assistant turns."""
        import torch

        prompts = [self.prompt(o, e) for o, e in items]
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m, _ in prompts]
        images = [img for _, imgs in prompts for img in imgs]
        self.processor.tokenizer.padding_side = "left"
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        gen = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample)
        if self.do_sample:
            gen.update(temperature=self.temperature, top_p=self.top_p)
            if self.seed is not None:
                torch.manual_seed(self.seed + sum(len(e.steps) for _, e in items))
        tok = self.processor.tokenizer
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**inputs, **gen, pad_token_id=tok.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1] :]
        n_new = int((new != tok.pad_token_id).sum())
        self.last_stats = {
            "seconds": time.perf_counter() - t0,
            "new_tokens": n_new,
            "prompt_tokens": int(inputs["attention_mask"].sum()),
        }
        return tok.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)

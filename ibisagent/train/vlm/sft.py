"""Supervised fine-tuning of a Qwen2.5-VL / Qwen3-VL agent on chat rows (TRL + peft).

Defaults are the reference recipe (spec section 4): LoRA rank 8 on every linear layer of the
language model, vision tower (and its merger) frozen, learning rate 1e-5, cosine schedule with
10 % warm-up, 10 epochs, global batch 256, images at most 512 x 512 pixels. The loss is masked
on the tool's observations and on deliberately wrong turns (`sft_data.ChatCollator`).
Checkpoints go to OUTPUT_DIR/checkpoint-N and a rerun resumes from the last one; the adapter
(with the processor) is saved to OUTPUT_DIR/adapter and, with `merge: true`, merged into a
standalone checkpoint at OUTPUT_DIR/merged (what vLLM serves).

    ibisagent train sft --config ibisagent/train/configs/sft_reference.yaml
    accelerate launch --config_file ibisagent/train/configs/accelerate_zero2.yaml \\
        -m ibisagent.train.vlm.sft --config ibisagent/train/configs/sft_reference.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ibisagent.errors import IbisInputError
from ibisagent.policies.vlm_chat import MAX_PIXELS
from ibisagent.train.run_yaml import read_run_yaml


@dataclass
class SFTRun:
    """One SFT run. `data`: a list of sources, each one of
    {"rows": PATH} (datasets folder or .jsonl of rows), {"oracle": PAIRS_CSV, "max_samples": N,
    "max_side": PX} (episodes of the reference click simulator on the real environment);
    any source may set "repeat": K. `lora` None = full fine-tune of the language model.
    `history` False (as released): each trained assistant turn is one row with only the system
    prompt and the user turn before it (`sft_data.single_turn_rows`), as the model runs;
    True: whole conversations."""

    model: str
    output_dir: str = "runs/sft"
    data: list[dict] = field(default_factory=list)
    history: bool = False
    max_pixels: int = MAX_PIXELS
    lora: dict | None = field(default_factory=lambda: {"r": 8, "alpha": 16, "dropout": 0.0})
    freeze_vision: bool = True
    learning_rate: float = 1e-5
    num_train_epochs: float = 10.0
    max_steps: int = -1
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    global_batch_size: int = 256
    per_device_train_batch_size: int = 1
    gradient_checkpointing: bool = True
    bf16: str | bool = "auto"
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 3
    resume: bool = True
    merge: bool = False
    seed: int = 0
    report_to: str = "none"  # the Trainer's own loggers (wandb, ...); metrics.jsonl and tb/ are always written
    tensorboard: str | bool = "auto"  # OUTPUT_DIR/tb beside metrics.jsonl: "auto" = when tensorboard is installed
    deepspeed: str | None = None
    tool: str = "litemedsam"

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> SFTRun:
        raw = read_run_yaml(cls, path, overrides)
        return cls(**raw)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_rows(run: SFTRun) -> list[dict]:
    """All rows of the run's data sources (checked: at least one)."""
    from ibisagent.train.vlm.sft_data import load_rows, oracle_rows, single_turn_rows

    if not run.data:
        raise IbisInputError("data", "the config lists no data sources")
    rows, tool = [], None
    for src in run.data:
        if "rows" in src:
            got = load_rows(src["rows"], src.get("max_rows"))
            if not run.history:  # one row per trained turn, as the released model trains and runs
                got = [r for row in got for r in single_turn_rows(row)]
        elif "oracle" in src:
            if tool is None:
                from ibisagent.tools import make_tool

                tool = make_tool(run.tool)
            got = oracle_rows(
                src["oracle"],
                tool,
                max_samples=src.get("max_samples"),
                history=run.history,
                max_side=src.get("max_side"),
                max_pixels=run.max_pixels,
                seed=run.seed,
            )
        else:
            raise IbisInputError(src, "a data source is {rows: PATH} or {oracle: PAIRS_CSV}")
        rows += got * int(src.get("repeat", 1))
    return rows


def index_dataset(n: int):
    """A `datasets.Dataset` of row indices; the collator looks the rows up (images stay PIL /
    paths in memory instead of being re-encoded into Arrow)."""
    from datasets import Dataset

    return Dataset.from_dict({"row": list(range(n))})


def language_linear_names(model) -> list[str]:
    """Full names of every nn.Linear outside the vision tower (and its merger) and the LM head."""
    import torch

    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "visual" not in n.split(".") and not n.endswith("lm_head")
    ]


def prepare_model(model, run: SFTRun):
    """Freeze the vision tower; wrap in LoRA on all language linears (or train them fully)."""
    if run.freeze_vision:
        for n, p in model.named_parameters():
            if "visual" in n.split("."):
                p.requires_grad_(False)
    if run.lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=int(run.lora.get("r", 8)),
        lora_alpha=int(run.lora.get("alpha", 16)),
        lora_dropout=float(run.lora.get("dropout", 0.0)),
        target_modules=language_linear_names(model),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def training_args(run: SFTRun):
    import torch
    from trl import SFTConfig

    per_step = run.per_device_train_batch_size * world_size()
    accum = max(1, run.global_batch_size // per_step)
    from ibisagent.hardware import training_bf16

    bf16 = training_bf16(run.bf16)
    return SFTConfig(
        output_dir=run.output_dir,
        per_device_train_batch_size=run.per_device_train_batch_size,
        gradient_accumulation_steps=accum,
        learning_rate=run.learning_rate,
        num_train_epochs=run.num_train_epochs,
        max_steps=run.max_steps,
        lr_scheduler_type=run.lr_scheduler_type,
        warmup_steps=run.warmup_ratio,
        weight_decay=run.weight_decay,
        gradient_checkpointing=run.gradient_checkpointing,
        bf16=bf16,
        logging_steps=run.logging_steps,
        save_steps=run.save_steps,
        save_total_limit=run.save_total_limit,
        seed=run.seed,
        report_to=run.report_to,
        deepspeed=run.deepspeed,
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )


def last_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return ckpts[-1] if ckpts else None


def metric_log_callback(run: SFTRun, resume_step: int, progress=None):
    """A TrainerCallback that appends each logged step to OUTPUT_DIR/metrics.jsonl (and TensorBoard
    in OUTPUT_DIR/tb, as `train rl` does) and calls `progress(step, total, logs)`."""
    from transformers import TrainerCallback

    from ibisagent.train.vlm.rl_state import MetricLog

    class MetricLogCallback(TrainerCallback):
        def __init__(self):
            self.log = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.log = MetricLog(run.output_dir, resume_step, run.tensorboard)

        def on_log(self, args, state, control, logs=None, **kwargs):
            rec = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if self.log is not None and "loss" in rec:
                self.log.log({"step": state.global_step, **rec})
            if progress is not None and "loss" in rec:
                progress(state.global_step, state.max_steps, rec)

        def on_train_end(self, args, state, control, **kwargs):
            if self.log is not None:
                self.log.close()

    return MetricLogCallback()


def train_sft(run: SFTRun, rows: list[dict] | None = None, config=None, progress=None) -> dict:
    """Train; returns {"adapter": path, "merged": path|None, "log": [...], "steps": N, "card": path}.
    `config`: the YAML file of `run` (named in the model card); `progress(step, total, logs)`
    after each logged step."""
    import torch
    from trl import SFTTrainer

    from ibisagent.policies.vlm_hf import checkpoint_family, families, load_processor
    from ibisagent.train.vlm.sft_data import ChatCollator

    base = Path(run.model)
    family = checkpoint_family(base)
    args = training_args(run)  # before the model: DeepSpeed ZeRO-3 needs it first
    rows = build_rows(run) if rows is None else rows
    # bf16 weights on a GPU (the released recipe); on a CPU autocast keeps float32 weights (small
    # updates survive) and computes in bf16
    dtype = torch.bfloat16 if args.bf16 and torch.cuda.is_available() else torch.float32
    model = families()[family][1].from_pretrained(base, dtype=dtype)
    processor = load_processor(base, family)
    model = prepare_model(model, run)
    resume = last_checkpoint(run.output_dir) if run.resume else None
    resume_step = int(resume.name.split("-")[-1]) if resume else 0
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=index_dataset(len(rows)),
        data_collator=ChatCollator(processor, run.max_pixels, rows),
        processing_class=processor,
        callbacks=[metric_log_callback(run, resume_step, progress)],
    )
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    out = Path(run.output_dir)
    adapter = out / ("adapter" if run.lora is not None else "model")
    trainer.save_model(str(adapter))
    card = None
    if trainer.is_world_process_zero():
        from ibisagent.io.images import atomic_write_bytes
        from ibisagent.train.vlm.card import write_vlm_card

        processor.save_pretrained(adapter)
        log = trainer.state.log_history
        atomic_write_bytes(out / "train_log.json", json.dumps(log, indent=1).encode())
        card = write_vlm_card("sft", run, out, log, trainer.state.global_step, len(rows), model, config)
    merged = merge_lora(adapter, out / "merged") if run.merge and run.lora is not None else None
    return {
        "adapter": adapter,
        "merged": merged,
        "log": trainer.state.log_history,
        "steps": trainer.state.global_step,
        "card": card,
    }


def merge_lora(adapter: str | Path, out: str | Path) -> Path:
    """Fold a LoRA adapter into its base: a standalone checkpoint (weights, tokenizer, processor
    files; other non-weight files of the base, e.g. preprocessor_config.json, copied over)."""
    from ibisagent.policies.vlm_hf import load_vlm

    adapter, out = Path(adapter), Path(out)
    model, processor, _ = load_vlm(adapter, device="cpu")
    base = Path(model.peft_config["default"].base_model_name_or_path)
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    processor.save_pretrained(out)
    for f in base.iterdir():
        if f.is_file() and f.suffix in (".json", ".jinja", ".txt", ".py") and not (out / f.name).exists():
            if not f.name.endswith(".index.json"):
                shutil.copy2(f, out / f.name)
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point for `accelerate launch -m ibisagent.train.vlm.sft --config FILE`."""
    ap = argparse.ArgumentParser(description="SFT of a Qwen-VL agent (see module docstring)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--output-dir")
    ap.add_argument("--max-steps", type=int)
    a = ap.parse_args(argv)
    run = SFTRun.from_yaml(a.config, output_dir=a.output_dir, max_steps=a.max_steps)
    result = train_sft(run, config=a.config)
    print(json.dumps({k: str(v) for k, v in result.items() if k != "log"}))


if __name__ == "__main__":
    main()

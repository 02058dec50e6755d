"""The model card that `ibisagent train sft` and `ibisagent train rl` write into their output
folder (OUTPUT_DIR/MODEL_CARD.md) when a run ends: the base model and its size, the data, every
setting of the run, what its metrics did, and the command that reruns it. Figures on held-out
data come from `ibisagent eval run --split heldout --policy hf:FOLDER` (docs/vlm.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ibisagent.io.images import atomic_write_bytes


def _model_size(model_dir: str | Path) -> str:
    """'hidden H, L layers, vision depth D' from a checkpoint's config.json (or '?')."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return "?"
    text, vision = cfg.get("text_config", cfg), cfg.get("vision_config", {})
    return (
        f"{cfg.get('model_type', '?')}: hidden {text.get('hidden_size', '?')}, {text.get('num_hidden_layers', '?')} "
        f"layers, vocabulary {text.get('vocab_size', '?')}; vision hidden {vision.get('hidden_size', '?')}, "
        f"depth {vision.get('depth', '?')}"
    )


def _trend(log: list[dict], key: str) -> str:
    vals = [r[key] for r in log if isinstance(r.get(key), (int, float))]
    if not vals:
        return ""
    k = max(1, len(vals) // 10)  # first and last tenth of the logged steps, so one noisy step does not speak
    first, last = sum(vals[:k]) / k, sum(vals[-k:]) / k
    return f"| {key} | {first:.4g} | {last:.4g} | {len(vals)} |"


def _volume(stage: str, run, rows: int, steps: int) -> str:
    """How much data the run's steps saw: rows (SFT) or episodes (GRPO) and passes over them."""
    if stage == "sft":
        seen = steps * int(run.global_batch_size)
        return f"{rows} training rows; {steps} optimiser steps of {run.global_batch_size} rows ({seen / max(rows, 1):.2f} passes)."
    seen = steps * int(run.batch_size)
    return (
        f"{rows} training items ({run.mode} mode); {steps} optimiser steps of {run.batch_size} queries x "
        f"{run.num_generations} rollouts ({seen / max(rows, 1):.2f} passes over the items)."
    )


def _precision(run) -> str:
    """'bfloat16 ...' or 'float32 ...' as the run resolved its `bf16` setting on this machine."""
    import torch

    from ibisagent.hardware import describe, training_bf16

    where = "GPU" if torch.cuda.is_available() else f"CPU, {describe()}"
    return f"{'bfloat16' if training_bf16(run.bf16) else 'float32'} (bf16={run.bf16}; {where})"


def vlm_card(
    stage: str, run, out_dir: str | Path, log: list[dict], steps: int, rows: int, n_params: int, config=None
) -> str:
    """Markdown card of one SFT ("sft") or GRPO ("rl") run; `run` is its SFTRun / RLRun, `config`
    the YAML file it was read from."""
    cfg = asdict(run)
    if stage == "sft":
        what = "supervised fine-tuning on synthesized click trajectories (TRL SFTTrainer; loss on the trained assistant turns only)"
    else:
        what = (
            f"agentic GRPO ({run.mode} mode) through the environment and the real segmentation tool ({run.tool}), "
            f"rewards {run.rewards}"
        )
    keys = ["loss", "mean_token_accuracy", "reward", "iou", "format_error_rate", "return"]
    trends = [t for t in (_trend(log, k) for k in keys) if t]
    lines = [
        f"# {Path(out_dir).name}: a Qwen-VL agent trained by ibisagent ({stage.upper()})",
        "",
        f"Base: `{run.model}` ({_model_size(run.model)}); {n_params / 1e6:.2f} M parameters. Stage: {what}.",
        _volume(stage, run, rows, steps),
        f"Computed in {_precision(run)}.",
        "",
        "## Metrics over the run",
        "",
        "| metric | first tenth of the steps | last tenth | logged steps |",
        "|---|---|---|---|",
        *trends,
        "",
        "Per step: `metrics.jsonl` (and TensorBoard in `tb/`). Figures on held-out images:",
        f"`ibisagent eval run --data DATA --split heldout --policy hf:{Path(out_dir) / ('model' if run.lora is None else 'adapter')}"
        " --policy centre`.",
        "",
        "## Reproduce",
        "",
        f"`ibisagent train {stage} --config {config or 'CONFIG.yaml'}` (rerun to resume from the last checkpoint).",
        "",
        "All settings: " + ", ".join(f"{k}={v}" for k, v in cfg.items()) + ".",
        "",
    ]
    return "\n".join(lines)


def write_vlm_card(
    stage: str, run, out_dir: str | Path, log: list[dict], steps: int, rows: int, model, config=None
) -> Path:
    """Write OUT_DIR/MODEL_CARD.md atomically; returns its path."""
    n_params = sum(p.numel() for p in model.parameters())
    path = Path(out_dir) / "MODEL_CARD.md"
    atomic_write_bytes(path, vlm_card(stage, run, out_dir, log, steps, rows, n_params, config).encode())
    return path

"""Checkpoints and metric logs of the GRPO trainer.

A checkpoint (OUTPUT_DIR/checkpoint-N) holds everything an exact resume needs: the trainable
parameters (`trainable.pt`; the LoRA weights, or the language model in a full fine-tune), the
optimizer and scheduler states, every RNG state (python, numpy, torch, CUDA) and the step, plus
the adapter (peft `save_pretrained`) or the model and the processor, loadable as a policy
(`hf:OUTPUT_DIR/checkpoint-N/adapter`). Data order is a function of (seed, step), so the step
alone puts the data cursor back. Writes go to a temporary folder renamed into place, so an
interrupted save never leaves a checkpoint that looks complete.

Metrics go to OUTPUT_DIR/metrics.jsonl (one JSON object per optimiser step) and, when the
`tensorboard` package is installed, to TensorBoard event files under OUTPUT_DIR/tb (what W&B's
`sync_tensorboard` picks up). On resume, lines of steps after the checkpoint are dropped, so no
step is logged twice.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np

from ibisagent.io.jsonl import JsonlAppender, read_jsonl, write_jsonl

STATE_FILE = "trainer_state.json"


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def trainable_state(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir, step: int, model, optimizer, scheduler, processor, keep: int, extra: dict) -> Path:
    """Write OUTPUT_DIR/checkpoint-STEP atomically; keep the newest `keep` checkpoints."""
    import torch

    out = Path(output_dir)
    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(trainable_state(model), tmp / "trainable.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    export_model(model, processor, tmp / ("adapter" if hasattr(model, "peft_config") else "model"))
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **extra}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(out)[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def export_model(model, processor, dest: Path) -> Path:
    """The adapter (LoRA) or the whole model, with the processor: a folder `hf:` policies load."""
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return dest


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore parameters, optimizer, scheduler and RNG states; returns the trainer state."""
    import torch

    params = dict(model.named_parameters())
    saved = torch.load(path / "trainable.pt", map_location="cpu", weights_only=True)
    missing = sorted(set(n for n, p in params.items() if p.requires_grad) ^ set(saved))
    if missing:
        from ibisagent.errors import IbisInputError

        raise IbisInputError(path, f"checkpoint does not match the model ({len(missing)} parameters differ)")
    with torch.no_grad():
        for n, v in saved.items():
            params[n].copy_(v)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", map_location="cpu", weights_only=False))
    return json.loads((path / STATE_FILE).read_text())


class MetricLog:
    """Appends one JSON line per step to OUTPUT_DIR/metrics.jsonl; mirrors to TensorBoard."""

    def __init__(self, output_dir: str | Path, resume_step: int = 0, tensorboard: str | bool = "auto"):
        self.path = Path(output_dir) / "metrics.jsonl"
        # rows past the checkpoint being resumed are dropped (they will be logged again); a torn
        # last line of a killed run is dropped by read_jsonl
        kept = [r for r in read_jsonl(self.path) if resume_step and r.get("step", 0) <= resume_step]
        write_jsonl(self.path, kept)
        self._out = JsonlAppender(self.path)
        self.tb = None
        if tensorboard in (True, "auto", "true"):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(output_dir) / "tb"), purge_step=resume_step + 1)
            except ImportError:
                if tensorboard is True or tensorboard == "true":
                    raise

    def log(self, rec: dict) -> None:
        self._out.write(rec)
        if self.tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)) and v == v:
                    self.tb.add_scalar(k, v, rec["step"])
            self.tb.flush()

    def close(self) -> None:
        self._out.close()
        if self.tb is not None:
            self.tb.close()

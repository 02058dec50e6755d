"""`ibisagent train ...`: training commands (the tool's click path; agent policies later)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import run_guarded
from ibisagent.errors import IbisInputError
from ibisagent.train import DEFAULT_CACHE_DIR

# Options shared by `train tool` and `train compact` (same data, split and embedding cache).
DataArg = Annotated[list[Path], typer.Argument(help="pairs.csv files or folders (searched for pairs.csv)")]
CacheDirOpt = Annotated[Path, typer.Option(help="On-disk embedding cache (shared by train tool and train compact)")]
HeldoutOpt = Annotated[int, typer.Option(min=0, max=90, help="Held-out percent of images (split by image)")]
# Overrides shared by `train sft` and `train rl` (YAML run configs).
OutputDirOpt = Annotated[Path | None, typer.Option(help="Override the config's output_dir")]
OptimiserStepsOpt = Annotated[int | None, typer.Option(help="Override: stop after this many optimiser steps")]
ResumeOpt = Annotated[bool, typer.Option(help="Resume from the last checkpoint in output_dir")]

app = typer.Typer(help="Train the segmentation tool and the agent policies.", no_args_is_help=True)


@app.command("tool")
def train_tool(
    data: DataArg,
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, log, weights, report")] = Path("runs/tool"),
    minutes: Annotated[float, typer.Option(help="Optimisation budget in minutes (embedding not included)")] = 40.0,
    cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
    heldout: HeldoutOpt = 15,
    eval_clicks: Annotated[int, typer.Option(help="Oracle clicks per held-out episode in the final evaluation")] = 20,
    install: Annotated[
        bool, typer.Option(help="Copy the weights and model card into the package (the new default)")
    ] = False,
    seed: int = 0,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads (1 is faster on a busy machine)")] = 2,
) -> None:
    """Fine-tune LiteMedSAM's prompt encoder + mask decoder to answer clicks.

    Embeds every image once (cached on disk; reruns skip it), trains with simulated click
    sessions for MINUTES, resumes from OUT/checkpoint.pt after an interruption, then measures
    held-out IoU after 1/3/5/10 clicks, NoC@80/85/90 and GT-box IoU before and after, and writes
    OUT/report.json and OUT/MODEL_CARD.md.

    Example: ibisagent train tool DATA --minutes 40 --install   (DATA: pairs.csv folders, see README)
    """
    run_guarded(_train_tool, data, out, minutes, cache_dir, heldout, eval_clicks, install, seed, threads)


def _train_tool(data, out, minutes, cache_dir, heldout, eval_clicks, install, seed, threads):
    import torch

    from ibisagent.train.tool.pipeline import run_tool_training

    torch.set_num_threads(threads)
    run_tool_training(data, out, minutes, cache_dir, heldout, eval_clicks, install, seed, threads)


# Folder name -> (family, size of `ibisagent.testing.tiny_vlm.SIZES`)
TINY_MODELS = {
    "tiny-qwen25vl": ("qwen2_5_vl", "tiny"),
    "tiny-qwen3vl": ("qwen3_vl", "tiny"),
    "small-qwen25vl": ("qwen2_5_vl", "small"),
    "small-qwen3vl": ("qwen3_vl", "small"),
}


def ensure_tiny_model(model: str) -> None:
    """The tiny and small configs' model (a folder named tiny-qwen25vl, small-qwen25vl, ...) is a
    randomly initialised VLM built from a config: built here on first use (`testing.tiny_vlm`)."""
    path = Path(model)
    known = TINY_MODELS.get(path.name)
    if known is None or (path / "config.json").exists():
        return
    from ibisagent.testing.tiny_vlm import SIZES, save_tiny_vlm

    family, size = known
    purpose = "for smoke runs" if size == "tiny" else "to train from scratch"
    typer.echo(f"building the {size} VLM {path} ({family}, random weights, {purpose})")
    save_tiny_vlm(path, family, **SIZES[size])


@app.command("sft")
def train_sft(
    config: Annotated[Path, typer.Option(help="YAML run config (ibisagent/train/configs/sft_*.yaml)")],
    output_dir: OutputDirOpt = None,
    max_steps: OptimiserStepsOpt = None,
    resume: ResumeOpt = True,
    merge_only: Annotated[bool, typer.Option(help="Only merge output_dir/adapter into output_dir/merged")] = False,
) -> None:
    """Supervised fine-tuning of a Qwen2.5-VL / Qwen3-VL agent (TRL + peft LoRA).

    Defaults are the reference recipe: LoRA rank 8 on all language linears, vision frozen,
    lr 1e-5, cosine with 10% warm-up, 10 epochs, global batch 256, images <= 512x512 px.
    Multi-GPU: accelerate launch --config_file ibisagent/train/configs/accelerate_zero2.yaml
    -m ibisagent.train.vlm.sft --config FILE (docs/vlm.md).

    Example: ibisagent train sft --config ibisagent/train/configs/sft_tiny.yaml
    """
    run_guarded(_train_sft, config, output_dir, max_steps, resume, merge_only)


def _train_sft(config, output_dir, max_steps, resume, merge_only):
    from ibisagent.train.vlm.sft import SFTRun, merge_lora, train_sft

    run = SFTRun.from_yaml(config, output_dir=str(output_dir) if output_dir else None, max_steps=max_steps)
    run.resume = resume
    ensure_tiny_model(run.model)
    out = Path(run.output_dir)
    if merge_only:
        if not (out / "adapter" / "adapter_config.json").exists():
            raise IbisInputError(out / "adapter", "no LoRA adapter to merge (train first)")
        typer.echo(f"merged: {merge_lora(out / 'adapter', out / 'merged')}")
        return

    def progress(step: int, total: int, logs: dict) -> None:
        acc = f", token accuracy {logs['mean_token_accuracy']:.3f}" if "mean_token_accuracy" in logs else ""
        typer.echo(f"SFT step {step}/{total}: loss {logs['loss']:.4f}{acc}", err=True)

    result = train_sft(run, config=config, progress=progress)
    losses = [r["loss"] for r in result["log"] if "loss" in r]
    if losses:
        typer.echo(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over {result['steps']} steps")
    typer.echo(f"saved: {result['adapter']}" + (f"; merged: {result['merged']}" if result["merged"] else ""))
    typer.echo(f"metrics: {out / 'metrics.jsonl'}; model card: {result['card']}")


@app.command("compact")
def train_compact_cmd(
    data: DataArg,
    out: Annotated[Path, typer.Option(help="Run folder: weights, log, report")] = Path("runs/compact"),
    epochs: Annotated[
        float,
        typer.Option(
            min=0,
            help="SFT passes over the training targets (0: as many as --minutes allow). The default is the "
            "training length that generalised best to sources never trained on (ibisagent eval lso; "
            "docs/experiments.md)",
        ),
    ] = 4.0,
    minutes: Annotated[
        float, typer.Option(help="Ceiling on the SFT stage's minutes (less where --budget needs it)")
    ] = 36.0,
    rl_minutes: Annotated[
        float,
        typer.Option(
            help="GRPO stage budget in minutes after SFT (0: SFT only; the shipped recipe, as GRPO did not "
            "move held-out IoU)",
            min=0,
        ),
    ] = 0.0,
    budget: Annotated[
        float,
        typer.Option(
            help="Whole-run budget in minutes: where embedding the images took long (an empty cache), SFT gets "
            "less than --minutes so that the run, evaluation included, ends within it (0: no such budget)",
            min=0,
        ),
    ] = 60.0,
    cache_dir: CacheDirOpt = DEFAULT_CACHE_DIR,
    heldout: HeldoutOpt = 15,
    eval_steps: Annotated[int, typer.Option(help="Max actions per held-out episode")] = 20,
    install: Annotated[
        bool, typer.Option(help="Copy the weights and report into the package (the new default)")
    ] = False,
    seed: int = 0,
    resume: Annotated[
        bool,
        typer.Option(
            help="Reuse the stages already trained in --out (compact_policy.pt, compact_policy_rl.pt): finish "
            "a run that was cut short, or re-measure a run with the current policy settings"
        ),
    ] = False,
    rl_split: Annotated[
        int,
        typer.Option(
            help="Percent of the training images kept from SFT for the GRPO stage, which learns the belief's "
            "calibration where it errs as on new images (0: GRPO on the SFT images; the images are "
            "data.splits.validation_split's; not used with --rl-minutes 0)",
            min=0,
            max=50,
        ),
    ] = 10,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the belief net: about 1.4x the SFT steps in the same minutes (needs a C++ compiler; "
            "falls back to eager)",
        ),
    ] = False,
) -> None:
    """Train the compact text-to-click policy (the default of `segment`) from image/mask pairs.

    Embeds images once (shared cache with `train tool`), trains the belief network by behaviour
    cloning for EPOCHS passes over the training targets (SFT), optionally then by step-level GRPO with the reference
    rewards on the real tool for RL_MINUTES; then runs held-out episodes from the query alone (no oracle) for each
    stage and reports mean IoU per category and modality next to text-free baselines (centre
    click, largest salient region). --install ships the stage with the higher held-out mean IoU.

    The defaults are the shipped recipe: 4 epochs of SFT, no GRPO (a few minutes with a warm embedding cache;
    --budget bounds the whole run at 60 min). Longer SFT fits the training sources better and new sources
    worse (ibisagent eval lso). With --rl-minutes, GRPO trains on the 10% of the training images that SFT
    does not see (--rl-split). The report's "timings" say where the minutes went.

    Example: ibisagent train compact DATA --install   (DATA: pairs.csv folders, see README)
    """
    run_guarded(
        _train_compact, data, out, minutes, cache_dir, heldout, eval_steps, install, seed, rl_minutes, resume, rl_split,
        compile, budget, epochs,
    )  # fmt: skip


def _train_compact(*args):
    """`run_compact_training` with the command's arguments in its order (imported only when run)."""
    from ibisagent.train.compact.pipeline import run_compact_training

    run_compact_training(*args)


@app.command("rl")
def train_rl_cmd(
    config: Annotated[Path, typer.Option(help="YAML run config (ibisagent/train/configs/rl_*.yaml)")],
    output_dir: OutputDirOpt = None,
    max_steps: OptimiserStepsOpt = None,
    resume: ResumeOpt = True,
) -> None:
    """GRPO of a Qwen2.5-VL / Qwen3-VL agent through the environment (transformers + peft).

    Defaults are the reference recipe: G=4 rollouts per query, no KL, clip 0.2, lr 1e-6, at
    most 20 actions, reward = mean of the paper's five terms. mode: step (one action from
    expert-prefix states of `ibisagent synth`'s RL Parquet, as released) or episode (whole
    episodes, the paper's objective). Metrics: OUTPUT_DIR/metrics.jsonl (+ TensorBoard in
    OUTPUT_DIR/tb when installed); checkpoints OUTPUT_DIR/checkpoint-N; adapter OUTPUT_DIR/adapter.

    Example: ibisagent train rl --config ibisagent/train/configs/rl_tiny.yaml
    """
    run_guarded(_train_rl, config, output_dir, max_steps, resume)


def _train_rl(config, output_dir, max_steps, resume):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from ibisagent.progress import progress_bar
    from ibisagent.train.vlm.grpo import GRPO
    from ibisagent.train.vlm.rl_config import RLRun

    run = RLRun.from_yaml(config, output_dir=str(output_dir) if output_dir else None, max_steps=max_steps)
    run.resume = resume
    ensure_tiny_model(run.model)
    console = Console(stderr=True)
    with console.status("loading the model, the tool and the data"):
        trainer = GRPO(run, config=config)
    columns = (TextColumn("GRPO {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with progress_bar(*columns, console=console) as bar:
        task = bar.add_task("", total=trainer.total)

        def on_step(m: dict) -> None:
            desc = f"reward {m['reward']:.3f} iou {m['iou']:.3f} format errors {m['format_error_rate']:.0%}"
            bar.update(task, completed=m["step"], description=desc)

        last = trainer.train(on_step)
    if last:
        typer.echo(f"step {last['step']}: reward {last['reward']:.4f}, IoU {last['iou']:.4f}, loss {last['loss']:.4f}")
    typer.echo(f"metrics: {Path(run.output_dir) / 'metrics.jsonl'}; saved: {Path(run.output_dir)}")
    typer.echo(f"model card: {Path(run.output_dir) / 'MODEL_CARD.md'}")

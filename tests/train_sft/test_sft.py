"""SFT on real oracle trajectories with a tiny Qwen2.5-VL: loss goes down, the adapter reloads and
drives the environment, a tiny overfit set teaches well-formed actions, resume and merge work."""

from __future__ import annotations

import json

import pytest

from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import format_check
from ibisagent.policies import make_policy
from ibisagent.policies.runner import run_episode
from ibisagent.train.vlm.sft import SFTRun, last_checkpoint, train_sft

LORA = {"r": 16, "alpha": 32, "dropout": 0.0}


def _run(base, out, **kw) -> SFTRun:
    args = dict(
        model=str(base),
        output_dir=str(out),
        lora=LORA,
        learning_rate=2e-2,
        global_batch_size=2,
        per_device_train_batch_size=2,
        gradient_checkpointing=False,
        logging_steps=1,
        save_steps=1000,
    )
    return SFTRun(**{**args, **kw})


class Counting(list):
    """Rows that count how many are read (by the collator)."""

    reads = 0

    def __getitem__(self, i):
        self.reads += 1
        return super().__getitem__(i)


def mean_loss(model, processor, rows) -> float:
    import torch

    from ibisagent.train.vlm.sft_data import ChatCollator

    batch = ChatCollator(processor)(rows)
    with torch.inference_mode():
        return float(model(**batch).loss)


@pytest.fixture(scope="module")
def overfit(tiny_base, oracle_trajectories, tmp_path_factory):
    """LoRA trained on the first step of two real trajectories (distinct queries and images)."""
    rows = [r for r in oracle_trajectories if "refinement step" not in r["messages"][1]["content"][1]["text"]]
    assert len(rows) == 2
    out = tmp_path_factory.mktemp("overfit")
    result = train_sft(
        _run(tiny_base, out, num_train_epochs=30, merge=True, lr_scheduler_type="constant_with_warmup"), rows
    )
    return rows, result


def test_overfit_learns_well_formed_actions(overfit):
    from ibisagent.policies.vlm_hf import load_vlm

    rows, result = overfit
    losses = [r["loss"] for r in result["log"] if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]
    model, processor, _ = load_vlm(result["adapter"], device="cpu")
    for r in rows:  # format reward (S_format) of greedy generations on the training prompts
        prompt = processor.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[prompt], images=r["images"], return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=80, do_sample=False)
        text = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert format_check(text) is None, text


def test_saved_adapter_drives_a_full_episode(overfit, tool, demo_samples):
    from ibisagent.train.vlm.sft_data import shrink

    rows, result = overfit
    assert (result["adapter"] / "adapter_config.json").exists()
    cfg = json.loads((result["adapter"] / "adapter_config.json").read_text())
    assert not any("visual" in t for t in cfg["target_modules"]) and len(cfg["target_modules"]) == 2 * 7
    # the first trained case: same image (shrunk as in training) and query
    image, gt = shrink(*demo_samples[0].load(), 96)
    query = rows[0]["messages"][1]["content"][1]["text"].removeprefix("<image>")
    policy = make_policy(f"hf:{result['adapter']}", max_new_tokens=80, device="cpu")
    ep = run_episode(IbisEnv(tool, max_steps=4), policy, image, query, gt_mask=gt)
    assert ep.steps[0].kind == "positive" and ep.steps[0].click is not None and ep.steps[0].iou is not None
    assert ep.stop_reason in ("stop", "repeat", "max_steps", "invalid")
    # the merged checkpoint is a plain checkpoint that answers exactly like base + adapter
    merged = make_policy(f"hf:{result['merged']}", max_new_tokens=80, device="cpu")
    assert not (result["merged"] / "adapter_config.json").exists()
    ep2 = run_episode(IbisEnv(tool, max_steps=4), merged, image, query, gt_mask=gt)
    assert [st.response for st in ep2.steps] == [st.response for st in ep.steps]


def test_sft_on_trajectories_lowers_the_loss_and_resumes(tiny_base, oracle_trajectories, tmp_path):
    from ibisagent.policies.vlm_hf import load_vlm

    rows = oracle_trajectories[:6]
    base_model, processor, _ = load_vlm(tiny_base, device="cpu")
    before = mean_loss(base_model, processor, rows)
    run = _run(tiny_base, tmp_path / "run", max_steps=3, save_steps=1, save_total_limit=None, learning_rate=1e-2)
    first = train_sft(run, rows)
    assert first["steps"] == 3 and last_checkpoint(run.output_dir).name == "checkpoint-3"
    tuned, _, _ = load_vlm(first["adapter"], device="cpu")
    assert mean_loss(tuned, processor, rows) < before - 0.1
    # a rerun with a larger budget resumes from checkpoint-3 (it does not start over)
    counted = Counting(rows)
    again = train_sft(_run(tiny_base, tmp_path / "run", max_steps=5, save_steps=1, learning_rate=1e-2), counted)
    steps = [r["step"] for r in again["log"] if "loss" in r]
    assert again["steps"] == 5 and steps == [1, 2, 3, 4, 5]
    # only steps 4 and 5 were computed (+ one batch the data loader reads ahead); a restart reads 10+
    assert counted.reads <= 3 * 2
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert log[-1]["step"] == 5
    # metrics.jsonl holds each step once, across the resume; the run wrote its model card
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5] and all("loss" in m for m in metrics)
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "5 optimiser steps" in card and "| loss |" in card and f"{len(rows)} training rows" in card


def test_cli_config_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from ibisagent.cli.main import app

    runner = CliRunner()
    cfg = tmp_path / "c.yaml"
    for text, message in [
        ("model: x\nlernrate: 1\n", "unknown key(s) lernrate"),
        ("output_dir: x\n", "needs 'model'"),
        ("model: [unclosed\n", "not valid YAML"),
        (f"model: {tmp_path}\ndata: []\n", "no config.json"),
    ]:
        cfg.write_text(text)
        r = runner.invoke(app, ["train", "sft", "--config", str(cfg)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (text, r.output)
    r = runner.invoke(app, ["train", "sft", "--config", str(tmp_path / "none.yaml")])
    assert r.exit_code == 2 and "no such config file" in r.output


def test_reference_recipe_defaults():
    from pathlib import Path

    import ibisagent.train as pkg

    run = SFTRun.from_yaml(Path(pkg.__file__).parent / "configs" / "sft_reference.yaml")
    assert run.lora["r"] == 8 and run.freeze_vision and run.learning_rate == 1e-5
    assert run.lr_scheduler_type == "cosine" and run.warmup_ratio == 0.1 and run.num_train_epochs == 10
    assert run.global_batch_size == 256 and run.max_pixels == 512 * 512
    default = SFTRun(model="m")
    assert (default.lora["r"], default.learning_rate, default.global_batch_size) == (8, 1e-5, 256)

"""GRPO runs on the tiny VLM over real images: the mean reward rises on a learnable toy reward,
both modes train and log, an interrupted run resumes exactly (parameters, optimizer, RNG, step),
and `ibisagent train rl` runs a YAML config."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from ibisagent.train.vlm.grpo import GRPO, train_rl
from ibisagent.train.vlm.rl_config import RLRun

LORA = {"r": 16, "alpha": 32, "dropout": 0.0}


def digit_share(completions, **kwargs) -> list[float]:
    """Toy reward a random tiny model can learn: the share of digits in its text (the alphabet of
    the protocol's coordinates). The spec's S_format is 0 for every sample of a random model."""
    return [sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in completions]


def episode_run(tiny_vlm, small_data, out, **kw) -> RLRun:
    args = dict(
        model=str(tiny_vlm),
        output_dir=str(out),
        mode="episode",
        data=[{"pairs": str(small_data / "pairs.csv"), "max_samples": 2, "max_side": 48}],
        num_generations=8,
        batch_size=1,
        micro_batch_size=8,
        max_actions=2,
        max_new_tokens=6,
        learning_rate=3e-2,
        lora=LORA,
        save_steps=1000,
        tensorboard=False,
        seed=0,
    )
    return RLRun(**{**args, **kw})


def test_mean_reward_rises_on_a_learnable_toy(tiny_vlm, small_data, tool, tmp_path):
    rewards = []
    run = episode_run(tiny_vlm, small_data, tmp_path, max_steps=12)
    train_rl(run, {"digits": (digit_share, 1.0)}, tool, on_step=lambda m: rewards.append(m["reward"]))
    first, last = np.mean(rewards[:4]), np.mean(rewards[-4:])
    assert last > first + 0.2, rewards
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == list(range(1, 13))
    assert {"s_format", "s_ans", "s_click", "s_pseg", "s_len", "iou", "actions", "format_errors"} <= set(logged[0])
    assert (tmp_path / "adapter" / "adapter_config.json").exists()


def _trainable(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_interrupted_run_resumes_exactly(tiny_vlm, small_data, tool, tmp_path):
    import torch

    funcs = {"digits": (digit_share, 1.0)}
    straight = GRPO(episode_run(tiny_vlm, small_data, tmp_path / "a", max_steps=3, num_generations=4), funcs, tool)
    straight.train()

    class Interrupt(Exception):
        pass

    def stop_after_1(m):
        if m["step"] == 1:
            raise Interrupt

    run_b = episode_run(tiny_vlm, small_data, tmp_path / "b", max_steps=3, num_generations=4, save_steps=1)
    with pytest.raises(Interrupt):
        GRPO(run_b, funcs, tool).train(stop_after_1)
    resumed = GRPO(run_b, funcs, tool)
    resumed.resume()
    assert resumed.step == 1
    saved = torch.load(tmp_path / "b" / "checkpoint-1" / "optimizer.pt", weights_only=True)
    state = resumed.opt.state_dict()
    assert len(state["state"]) == len(saved["state"]) > 0
    for k, v in saved["state"].items():
        assert float(state["state"][k]["step"]) == 1.0
        assert torch.equal(state["state"][k]["exp_avg"], v["exp_avg"])
    resumed.train()
    assert resumed.step == 3
    a, b = _trainable(straight.model), _trainable(resumed.model)
    assert any(float(a[n].abs().sum()) > 0 for n in a if "lora_B" in n)  # it did learn (LoRA B starts at 0)
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6), n
    logged = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]  # nothing repeated, nothing lost
    rewards_a = [json.loads(x)["reward"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rewards_b = [json.loads(x)["reward"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert rewards_a == pytest.approx(rewards_b)  # same samples after the resume (RNG restored)


def test_step_mode_via_the_cli(tiny_vlm, rl_parquet, tmp_path):
    from typer.testing import CliRunner

    from ibisagent.cli.main import app

    cfg = tmp_path / "rl.yaml"
    cfg.write_text(
        f"model: {tiny_vlm}\noutput_dir: {tmp_path / 'out'}\nmode: step\ndata: [{{parquet: {rl_parquet}, max_rows: 6}}]\n"
        "batch_size: 2\nnum_generations: 2\nmicro_batch_size: 8\nmax_new_tokens: 8\nlora: {r: 8, alpha: 16}\nmax_steps: 2\n"
        "save_steps: 1\ntensorboard: auto\n"
    )
    res = CliRunner().invoke(app, ["train", "rl", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2]
    for m in logged:
        assert m["rollouts"] == 4 and m["actions"] == 1.0
        # the random tiny model writes malformed text: S_format 0, counted as format errors
        assert m["s_format"] == 0.0 and m["format_errors"] == 4
        assert m["reward"] == pytest.approx(m["s_total"]) and 0 <= m["iou"] <= 1
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()  # written by the run: data, metrics, command
    assert "(RL)" in card and "2 optimiser steps" in card and "| reward |" in card and str(cfg) in card
    if importlib.util.find_spec("tensorboard") is not None:  # the `train` extra's TensorBoard logs
        assert list((tmp_path / "out" / "tb").glob("events.out.tfevents.*"))

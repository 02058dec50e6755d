"""With verl installed: the tool through verl's own ToolAgentLoop dispatch, the `ibis` parser,
and the recipe composed by verl's config loader with the launch script's overrides."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("verl.tools.base_tool", reason="verl is not installed: pip install 'ibisagent[verl]'")

from ibisagent.env.env import IbisEnv  # noqa: E402
from ibisagent.env.protocol import format_response  # noqa: E402
from ibisagent.integrations.verl import CONFIG_DIR, TOOL_NAME  # noqa: E402
from ibisagent.integrations.verl.data import to_verl_rows  # noqa: E402
from ibisagent.integrations.verl.reward import compute_score  # noqa: E402
from ibisagent.io.images import load_image, load_mask  # noqa: E402
from ibisagent.rewards import make_env_reward, score_terms  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STOP = format_response("The mask fits the lung.", "stop", answer="The lung is segmented.")


def _episode_row(rl_rows) -> dict:
    return next(r for r in to_verl_rows(rl_rows, mode="episode") if r["extra_info"]["kind"] == "segment")


def _click_on_target(create: dict) -> str:
    gt = load_mask(create["gt_mask_path"])
    ys, xs = np.nonzero(gt)
    k = len(xs) // 2
    H, W = gt.shape
    return format_response("A click inside the target.", "positive", (xs[k] + 0.5) / W, (ys[k] + 0.5) / H)


def test_parser_turns_actions_into_calls():
    from verl.experimental.agent_loop.tool_parser import ToolParser

    from ibisagent.integrations.verl.tool import IbisActionParser, tool_calls_for

    assert ToolParser._registry["ibis"] is IbisActionParser
    (call,) = tool_calls_for(format_response("x", "negative", 0.1, 0.2))
    assert call.name == TOOL_NAME and "Negative Point (0.1000, 0.2000)" in call.arguments
    assert tool_calls_for(STOP) == [] and tool_calls_for("no action") == []


def test_tool_call_through_verl_dispatch(rl_rows, tool, shared_scorer):
    from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop

    from ibisagent.integrations.verl.tool import IbisClickTool, tool_calls_for

    ibis = IbisClickTool({"type": "native", "tool": "litemedsam", "max_steps": 20}, None)
    ibis._tool = tool  # the session's LiteMedSAM
    row = _episode_row(rl_rows)
    create = row["extra_info"]["tools_kwargs"][TOOL_NAME]["create_kwargs"]
    click = _click_on_target(create)
    loop = SimpleNamespace(tools={TOOL_NAME: ibis}, max_tool_response_length=512, tool_response_truncate_side="middle")
    agent = SimpleNamespace(request_id="traj-1", extra_fields={}, tools_kwargs=row["extra_info"]["tools_kwargs"])
    (call,) = tool_calls_for(click)
    resp, reward, metrics = asyncio.run(ToolAgentLoop._call_tool(loop, call, agent.tools_kwargs, agent))
    assert resp.text.startswith("This is a refinement step") and len(resp.image) == 1
    w, h = resp.image[0].size
    assert w * h <= 512 * 512 and metrics["iou"] > 0.3
    # the same step in our environment, directly: the same reward and IoU
    env = IbisEnv(tool, reward_fn=make_env_reward(create["answer"], bool(create["closed"])))
    env.reset(load_image(create["image_path"]), create["query"], gt_mask=load_mask(create["gt_mask_path"]))
    _, want, *_ = env.step(click)
    assert reward == pytest.approx(want) and agent.extra_fields["ibis_step_rewards"] == [reward]
    assert agent.extra_fields["ibis_final_iou"] == pytest.approx(env.current_iou())
    # the episode ends with a stop; verl hands the extra fields to the reward function
    text = f"{click}\n{resp.text}\n{STOP}"
    extra = {**row["extra_info"], **agent.extra_fields}
    out = compute_score(row["data_source"], text, row["reward_model"]["ground_truth"], extra)
    gt = load_mask(create["gt_mask_path"])
    stop = score_terms(STOP, env.mask, env.mask, gt, env.current_iou(), 2, create["answer"])["total"]
    assert out["actions"] == 2 and out["score"] == pytest.approx((reward + stop) / 2)
    # a tool that fails: verl turns it into text, the reward raises
    broken = SimpleNamespace(request_id="traj-2", extra_fields={}, tools_kwargs={TOOL_NAME: {"create_kwargs": {}}})
    resp2, _, _ = asyncio.run(ToolAgentLoop._call_tool(loop, call, broken.tools_kwargs, broken))
    assert "Error executing tool" in resp2.text
    with pytest.raises(RuntimeError, match="tool failed"):
        compute_score("ibisagent", text, "gt.png", {**row["extra_info"], **broken.extra_fields})


@pytest.mark.parametrize("mode", ["episode", "step"])
def test_recipe_composes_with_verl_config_loader(mode):
    pytest.importorskip("hydra")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    env = {**os.environ, "DRY_RUN": "1", "MODE": mode, "PYTHON": sys.executable, "MODEL": "/m", "TRAIN": "/t.parquet"}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "verl" / "run_grpo.sh")], env=env, capture_output=True, text=True, check=True
    )
    overrides = [a for a in out.stdout.splitlines() if not a.startswith("--")]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="ibis_grpo", overrides=overrides)
    OmegaConf.resolve(cfg)
    validate_config(cfg, use_reference_policy=False, use_critic=False)
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert rollout.n == 4 and actor.optim.lr == 1e-6 and not actor.use_kl_loss
    assert rollout.multi_turn.enable == (mode == "episode") and rollout.multi_turn.max_assistant_turns == 20
    assert Path(cfg.reward.custom_reward_function.path).name == "reward.py"
    assert Path(rollout.multi_turn.tool_config_path).exists()

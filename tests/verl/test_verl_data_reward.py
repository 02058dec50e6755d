"""The verl converter and reward module on real synthesized rows (verl itself not needed)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ibisagent.env.protocol import SYSTEM_PROMPT, format_response, refinement_turn_text
from ibisagent.integrations.verl import CONFIG_DIR, TOOL_NAME
from ibisagent.integrations.verl.data import convert_parquet, to_verl_rows
from ibisagent.integrations.verl.reward import compute_score
from ibisagent.io.images import load_image
from ibisagent.rewards import make_reward_funcs

ROOT = Path(__file__).resolve().parents[2]


def _write(rows, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def test_step_rows_convert_and_round_trip(rl_rows, tmp_path):
    import pyarrow.parquet as pq

    _write(rl_rows, tmp_path / "ours.parquet")
    n = convert_parquet(tmp_path / "ours.parquet", tmp_path / "verl.parquet", mode="step")
    got = pq.read_table(tmp_path / "verl.parquet").to_pylist()
    assert n == len(rl_rows) == len(got) > 10
    for src, row in zip(rl_rows, got):
        system, user = row["prompt"]
        assert system == {"role": "system", "content": SYSTEM_PROMPT} and user["role"] == "user"
        assert user["content"].count("<image>") == len(row["images"]) == 1
        img = np.asarray(Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB"))
        assert np.array_equal(img, load_image(src["obs_path"]))
        assert row["reward_model"] == {"style": "rule", "ground_truth": src["gt_mask_path"]}
        extra = row["extra_info"]
        assert extra["ibis_mode"] == "step" and extra["step"] == src["step"]
        assert extra["prev_clicks"] == src["prev_clicks"] and extra["image_path"] == src["image_path"]


def test_episode_rows_start_trajectories(rl_rows):
    rows = to_verl_rows(rl_rows, mode="episode")
    assert len(rows) == sum(r["step"] == 1 for r in rl_rows) > 0
    for row in rows:
        create = row["extra_info"]["tools_kwargs"][TOOL_NAME]["create_kwargs"]
        assert row["agent_name"] == "tool_agent" and row["extra_info"]["ibis_mode"] == "episode"
        assert Path(create["image_path"]).exists() and create["query"]


def test_step_reward_is_the_rewards_module(rl_rows, tool, shared_scorer, tmp_path):
    import pyarrow.parquet as pq

    picked = [r for r in rl_rows if r["kind"] in ("segment", "self_correction", "discard", "vqa")][:16]
    _write(picked, tmp_path / "ours.parquet")
    convert_parquet(tmp_path / "ours.parquet", tmp_path / "verl.parquet")
    verl_rows = pq.read_table(tmp_path / "verl.parquet").to_pylist()  # types as verl reads them
    cols = {k: [r[k] for r in picked] for k in picked[0]}
    texts = [r["expert_response"] for r in picked]
    want = make_reward_funcs(tool)["s_total"](texts, **cols)
    broken = "<think>hm</think> no action"
    for text, row, w in zip(texts, verl_rows, want):
        out = compute_score(row["data_source"], text, row["reward_model"]["ground_truth"], row["extra_info"])
        assert out["score"] == pytest.approx(w)
        assert out["score"] == pytest.approx(sum(out[f"s_{k}"] for k in ("format", "ans", "click", "pseg", "len")) / 5)
        bad = compute_score(row["data_source"], broken, row["reward_model"]["ground_truth"], row["extra_info"])
        assert bad["s_format"] == 0.0 and bad["s_ans"] == 0.0  # malformed text: the penalty, no crash


def test_episode_score_hand_computed():
    click = format_response("Liver, left.", "positive", 0.3, 0.4)
    stop = format_response("It fits.", "stop", answer="The liver.")
    tool_reply = refinement_turn_text("Segment the liver.").removeprefix("<image>")
    text = f"{click}\ntool\n{tool_reply}\nassistant\n{stop}"
    extra = {"ibis_mode": "episode", "ibis_step_rewards": [0.8, 0.6], "ibis_final_iou": 0.85, "prev_iou": 0.0}
    out = compute_score("ibisagent", text, "gt.png", extra)
    # final stop at action 3: format 1, ans 3 (IoU 0.85 > 0.80), click 0, pseg 0, len 1 -> 1.0
    assert out["score"] == pytest.approx((0.8 + 0.6 + 1.0) / 3) and out["actions"] == 3
    broken = compute_score("ibisagent", f"{click}\n{tool_reply}\nno action here", "gt.png", extra)
    assert broken["score"] == pytest.approx((0.8 + 0.6 + 0.2) / 3)  # invalid: only S_len = 1
    with pytest.raises(RuntimeError, match="tool failed"):
        compute_score("ibisagent", text, "gt.png", {**extra, "ibis_tool_error": "ToolServerError: down"})


def test_recipe_values_and_launch_script():
    cfg = yaml.safe_load((CONFIG_DIR / "ibis_grpo.yaml").read_text())
    actor, rollout = cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    assert rollout["n"] == 4 and actor["optim"]["lr"] == 1e-6 and actor["clip_ratio"] == 0.2
    assert actor["use_kl_loss"] is False and cfg["algorithm"]["use_kl_in_reward"] is False
    assert cfg["algorithm"]["adv_estimator"] == "grpo" and cfg["algorithm"]["norm_adv_by_std_in_grpo"] is True
    assert rollout["multi_turn"]["max_assistant_turns"] == 20 and rollout["multi_turn"]["format"] == "ibis"
    assert cfg["data"]["train_batch_size"] == 256 and cfg["trainer"]["total_epochs"] == 12
    assert cfg["data"]["max_prompt_length"] + cfg["data"]["max_response_length"] == 32768
    tools = yaml.safe_load((CONFIG_DIR / "ibis_tools.yaml").read_text())["tools"]
    assert tools[0]["class_name"] == "ibisagent.integrations.verl.tool.IbisClickTool"
    script = ROOT / "scripts" / "verl" / "run_grpo.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0

"""The transformers policy on tiny real models: batching, history, sampling, a clean episode end."""

from __future__ import annotations

import pytest

from ibisagent.env.env import IbisEnv
from ibisagent.errors import IbisInputError
from ibisagent.policies import make_policy
from ibisagent.policies.runner import run_episode


@pytest.fixture(scope="module")
def policy(tiny_vlm_dirs):
    return make_policy(f"hf:{tiny_vlm_dirs['qwen2_5_vl']}", max_new_tokens=24, device="cpu")


def test_random_model_episode_ends_cleanly(tool, small_case, policy):
    img, gt, query = small_case
    ep = run_episode(IbisEnv(tool), policy, img, query, gt_mask=gt)
    # garbage text from a random model: parsed, recorded, the episode stops with the reason
    assert ep.stop_reason == "invalid" and len(ep.steps) == 1
    assert ep.steps[0].kind == "invalid" and ep.steps[0].error
    assert policy.last_stats["new_tokens"] > 0


def test_batch_equals_single_and_history_grows(tool, small_case, policy, tiny_vlm_dirs):
    img, gt, query = small_case
    env_a, env_b = IbisEnv(tool), IbisEnv(tool)
    oa, _ = env_a.reset(img, query, gt_mask=gt)
    ob, _ = env_b.reset(img[::-1].copy(), "Segment the spleen")
    single = [policy.act(oa, env_a.episode), policy.act(ob, env_b.episode)]
    assert policy.act_batch([(oa, env_a.episode), (ob, env_b.episode)]) == single  # left padding is exact
    env_a.step("<think>\nok\n</think>\n<action>\nPositive Point (0.5000, 0.5000)\n</action>")
    obs2 = env_a.observation()
    hist = make_policy(f"hf:{tiny_vlm_dirs['qwen3_vl']}", history=True, max_new_tokens=4, device="cpu")
    msgs, images = hist.prompt(obs2, env_a.episode)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"] and len(images) == 2
    assert isinstance(hist.act(obs2, env_a.episode), str)


def test_sampling_is_seeded(small_case, tool, tiny_vlm_dirs):
    img, gt, query = small_case
    env = IbisEnv(tool)
    obs, _ = env.reset(img, query)
    runs = [
        make_policy(f"hf:{tiny_vlm_dirs['qwen2_5_vl']}", do_sample=True, seed=3, max_new_tokens=16, device="cpu").act(
            obs, env.episode
        )
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_hf_spec_errors(tmp_path):
    with pytest.raises(IbisInputError, match="hf:PATH"):
        make_policy("hf:")
    with pytest.raises(IbisInputError, match="no such model folder"):
        make_policy(f"hf:{tmp_path / 'nope'}")

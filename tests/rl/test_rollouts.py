"""Rollouts through the real environment and LiteMedSAM: one encoder pass per image per group
whatever G is, one batched generate() call per decision step, whole episodes with observations
masked from the loss, and malformed text that scores the format penalty without breaking a batch."""

from __future__ import annotations

import numpy as np
import pytest

from ibisagent.env.protocol import format_response
from ibisagent.train.vlm.rollout import GenOut, clean_text, load_parquet_rows, rollout_episodes, rollout_steps
from ibisagent.train.vlm.rollout import tasks_from_pairs as pairs_tasks

MALFORMED = [
    "",
    "garbage without any tags",
    "<think>x</think><action>Positive Point (2.0000, nan)</action>",
    "<think>x</think><action>Jump (0.1, 0.2)</action>",
    "<think>x<|im_start|>assistant</think><action>Negative Point (0.5, 0.5)<|image_pad|>",
    "<think>unclosed<action>Terminate</action>",
]


class Scripted:
    """A generator that answers from a script (by call and position) and counts its calls."""

    def __init__(self, script):
        self.script, self.calls, self.batch_sizes = script, 0, []

    def __call__(self, prompts):
        self.batch_sizes.append(len(prompts))
        out = [GenOut(clean_text(self.script(self.calls, i)), 7, False) for i in range(len(prompts))]
        self.calls += 1
        return out


def centre_click(gt: np.ndarray, kind="positive") -> str:
    ys, xs = np.nonzero(gt)
    H, W = gt.shape
    return format_response("aim", kind, (xs.mean() + 0.5) / W, (ys.mean() + 0.5) / H)


@pytest.fixture(scope="module")
def tasks(small_data):
    return pairs_tasks(small_data / "pairs.csv")


@pytest.mark.parametrize("G", [2, 6])
def test_one_encoder_pass_per_image_per_group(tool, tasks, G):
    tool.cache.clear()
    before = tool.timings.encoder_calls
    gen = Scripted(lambda call, i: centre_click(tasks[0].gt) if call == 0 else MALFORMED[1])
    group = [tasks[0], tasks[2]]  # a lung of the X-ray, the polyp of the colon image
    outs = rollout_episodes(group, G, gen, tool, {"s_total": (None, 1.0)}, max_actions=4)
    assert len(outs) == 2 * G
    assert tool.timings.encoder_calls - before == 2  # two distinct images, whatever G is
    assert gen.batch_sizes == [2 * G, 2 * G]  # all live rollouts in one generate() per step


def test_full_episodes_mask_observations_and_share_one_advantage(tool, tasks, tiny_vlm):
    from ibisagent.policies.vlm_hf import load_processor
    from ibisagent.train.vlm.sft_data import ChatCollator

    gt = tasks[0].gt
    stop = format_response("the mask covers the lung", "stop", answer="The left lung is segmented.")

    def script(call, i):  # i: position among the live rollouts; rollout 3 writes garbage at its 2nd turn
        if call == 1 and i == 3:
            return MALFORMED[3]
        return [centre_click(gt), centre_click(np.roll(gt, i + 1, axis=1)), stop][min(call, 2)]

    outs = rollout_episodes([tasks[0]], 4, Scripted(script), tool, {"s_total": (None, 1.0)}, 5, history=True)
    assert [o.actions for o in outs] == [3, 3, 3, 2]  # the malformed turn ends rollout 3
    assert [o.format_errors for o in outs] == [0, 0, 0, 1]
    for o in outs:
        assert len(o.rows) == 1 and o.rows[0]["train"] == [True] * o.actions  # one chat, every agent turn
        assert 0 < o.reward < 1 and o.terms["total"] == pytest.approx(o.reward)
    assert outs[0].iou > 0.3  # a real mask from the tool
    processor = load_processor(tiny_vlm, "qwen2_5_vl")
    batch = ChatCollator(processor)(outs[0].rows)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = processor.tokenizer.decode(ids[labels != -100])
    assert trained.count("<action>") == 3 and "refinement step" not in trained  # observations masked
    assert "<|image_pad|>" not in trained


def test_malformed_text_scores_the_format_penalty_and_never_crashes(tool, rl_parquet):
    from ibisagent.rewards import StepScorer, make_reward_funcs

    rows = load_parquet_rows(rl_parquet)[:2]
    texts = [*MALFORMED, rows[0]["expert_response"]]
    G = len(texts)
    spec = make_reward_funcs(tool)
    outs = rollout_steps(rows, G, Scripted(lambda c, i: texts[i % G]), {"s_total": (spec["s_total"], 1.0)}, spec,
                         StepScorer(tool))  # fmt: skip
    assert len(outs) == 2 * G
    for o in outs[:G]:
        malformed = o.texts[0] != clean_text(rows[0]["expert_response"])
        assert o.terms["format"] == (0.0 if malformed else 1.0)
        assert o.format_errors == int(malformed)
        assert o.iou is not None and "<|" not in o.rows[0]["messages"][-1]["content"][0]["text"]
    assert outs[G - 1].reward > max(o.reward for o in outs[: G - 1])  # the expert's move scores best

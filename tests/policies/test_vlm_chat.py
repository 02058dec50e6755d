"""The released prompt layout, and earlier turns rebuilt from an episode exactly as the env showed them."""

from __future__ import annotations

import numpy as np

from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import SYSTEM_PROMPT, first_turn_text, refinement_turn_text
from ibisagent.policies.base import Policy
from ibisagent.policies.oracle import OraclePolicy
from ibisagent.policies.vlm_chat import cap_image, episode_chat, training_chats


class Recorder(Policy):
    """The oracle, remembering every observation the environment gave it."""

    def __init__(self):
        self.inner, self.seen = OraclePolicy(0.95), []

    def begin(self, query, gt_mask=None):
        self.inner.begin(query, gt_mask)

    def act(self, obs, episode):
        self.seen.append((obs.image.copy(), obs.text))
        return self.inner.act(obs, episode)


def test_history_rebuilds_every_observation(tool, small_case):
    from ibisagent.policies.runner import run_episode

    img, gt, query = small_case
    rec = Recorder()
    ep = run_episode(IbisEnv(tool, max_steps=5), rec, img, query, gt_mask=gt)
    assert len(ep.steps) >= 2
    msgs, images = episode_chat(img, ep, upto=len(ep.steps) - 1, history=True)
    assert msgs[0]["content"][0]["text"] == SYSTEM_PROMPT
    users = [m for m in msgs if m["role"] == "user"]
    assert len(users) == len(images) == len(ep.steps) == len(rec.seen)
    for (seen_img, seen_text), m, pil in zip(rec.seen, users, images):
        # the image part stands for the protocol text's "<image>" placeholder
        assert m["content"][0] == {"type": "image"} and m["content"][1]["text"] == seen_text.removeprefix("<image>")
        assert np.array_equal(np.asarray(pil), np.asarray(cap_image(seen_img)))
    assert users[0]["content"][1]["text"] == first_turn_text(query).removeprefix("<image>")
    assert users[1]["content"][1]["text"] == refinement_turn_text(query).removeprefix("<image>")
    assistants = [m["content"][0]["text"] for m in msgs if m["role"] == "assistant"]
    assert assistants == [s.response for s in ep.steps[:-1]]
    # history off: just the system prompt and the current turn
    m1, i1 = episode_chat(img, ep, upto=1, history=False)
    assert [m["role"] for m in m1] == ["system", "user"] and len(i1) == 1
    rows = training_chats(img, ep, history=False, train_flags=[i != 1 for i in range(len(ep.steps))])
    assert len(rows) == len(ep.steps) and rows[1]["train"] == [False]
    assert rows[0]["messages"][-1]["content"][0]["text"] == ep.steps[0].response
    (whole,) = training_chats(img, ep, history=True)
    assert len(whole["images"]) == len(ep.steps) and whole["train"] == [True] * len(ep.steps)

"""Baseline policies: what they click, reproducibility, and the box prompt through the harness."""

from __future__ import annotations

import numpy as np
import pytest

from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import parse_response
from ibisagent.errors import IbisInputError
from ibisagent.policies import make_policy
from ibisagent.policies.baselines import BoxPromptPolicy, CentreClickPolicy, RandomClickPolicy, mask_box
from ibisagent.policies.runner import run_episode


class _Obs:
    def __init__(self, h=10, w=20, clicks=()):
        self.original = np.zeros((h, w, 3), np.uint8)
        self.clicks = list(clicks)
        self.query = "liver"


def test_make_policy_knows_the_baselines():
    assert isinstance(make_policy("centre"), CentreClickPolicy)
    assert isinstance(make_policy("center"), CentreClickPolicy)
    assert isinstance(make_policy("box"), BoxPromptPolicy)
    rnd = make_policy("random:3", seed=5)
    assert isinstance(rnd, RandomClickPolicy) and rnd.n_clicks == 3
    assert make_policy("oracle:0.85").iou_threshold == 0.85


@pytest.mark.parametrize("spec", ["random:0", "random:x", "oracle:2", "oracle:abc", "box:1", "nope"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(IbisInputError):
        make_policy(spec)


def test_centre_clicks_the_centre_then_stops():
    p = CentreClickPolicy()
    a = parse_response(p.act(_Obs(), None))
    assert a.kind == "positive" and a.to_pixel(20, 10) == (10, 5)
    assert parse_response(p.act(_Obs(clicks=[(10, 5, 1)]), None)).kind == "stop"


def test_random_is_seeded_and_in_the_image():
    def clicks(seed):
        p = RandomClickPolicy(n_clicks=5, seed=seed)
        return [parse_response(p.act(_Obs(h=7, w=9), None)) for _ in range(5)]

    a, b, c = clicks(1), clicks(1), clicks(2)
    assert [(x.x, x.y) for x in a] == [(x.x, x.y) for x in b]
    assert [(x.x, x.y) for x in a] != [(x.x, x.y) for x in c]
    assert all(0 <= x.x <= 1 and 0 <= x.y <= 1 and x.kind == "positive" for x in a)
    assert parse_response(RandomClickPolicy(1).act(_Obs(clicks=[(0, 0, 1)]), None)).kind == "stop"


def test_mask_box_is_tight_and_inclusive():
    m = np.zeros((8, 10), bool)
    m[2:5, 3:7] = True
    assert mask_box(m).tolist() == [3, 2, 6, 4]
    assert mask_box(np.zeros((3, 3), bool)) is None


def test_box_baseline_segments_from_the_reference_box(original_tool, demo_samples):
    """The box-trained LiteMedSAM weights segment the spleen from its box; the episode is one stop."""
    sample = next(s for s in demo_samples if s.structure == "spleen")
    image, gt = sample.load()
    env = IbisEnv(original_tool, max_steps=5)
    policy = BoxPromptPolicy()
    init = policy.initial_prompt(original_tool, original_tool.embed(image), gt)
    ep = run_episode(env, policy, image, "Segment the spleen.", gt, init_mask=init)
    from ibisagent.metrics import iou

    assert iou(ep.final_mask, gt) > 0.8
    assert [s.kind for s in ep.steps] == ["stop"]


def test_salient_clicks_inside_the_largest_bright_region():
    from ibisagent.policies.baselines import SalientClickPolicy, largest_salient_region

    obs = _Obs(h=40, w=60)
    obs.original[5:10, 5:10] = 200  # small bright blob
    obs.original[20:35, 30:55] = 220  # the largest bright region
    region = largest_salient_region(obs.original)
    assert region[27, 42] and not region[7, 7]
    p = make_policy("salient")
    assert isinstance(p, SalientClickPolicy)
    a = parse_response(p.act(obs, None))
    x, y = a.to_pixel(60, 40)
    assert a.kind == "positive" and 30 <= x < 55 and 20 <= y < 35
    assert parse_response(p.act(_Obs(clicks=[(x, y, 1)]), None)).kind == "stop"
    flat = parse_response(p.act(_Obs(), None))  # a flat image: the centre, no crash
    assert flat.kind == "positive" and flat.to_pixel(20, 10) == (10, 5)

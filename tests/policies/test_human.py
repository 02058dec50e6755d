"""A person's commands become protocol turns; the human policy drives the environment."""

from __future__ import annotations

import pytest

from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import parse_response
from ibisagent.errors import IbisInputError
from ibisagent.policies import make_policy
from ibisagent.policies.human import command_to_turn
from ibisagent.policies.runner import run_episode


def test_commands():
    a = parse_response(command_to_turn("p 0.25,0.5", 200, 100))
    assert (a.kind, a.x, a.y) == ("positive", 0.25, 0.5)
    a = parse_response(command_to_turn("- 150, 20", 200, 100))  # pixels -> pixel centre
    assert a.kind == "negative" and a.to_pixel(200, 100) == (150, 20)
    a = parse_response(command_to_turn("done the liver is there", 200, 100))
    assert a.kind == "stop" and a.answer == "the liver is there"
    for bad in ("click", "p 0.5", "p a,b", "n 300,20", "p -1,0.5", "p nan,0.2"):
        with pytest.raises(IbisInputError):
            command_to_turn(bad, 200, 100)


def test_scripted_and_prompted_episodes(tool, small_case):
    img, gt, query = small_case
    ep = run_episode(IbisEnv(tool), make_policy("human", commands=["p 0.45,0.5", "n 5,5"]), img, query, gt_mask=gt)
    assert [s.kind for s in ep.steps] == ["positive", "negative", "stop"] and ep.stop_reason == "stop"
    assert ep.clicks[1] == (5, 5, 0) and ep.steps[0].iou is not None
    answers = iter(["nonsense", "p 0.45,0.5", "stop"])
    ep2 = run_episode(IbisEnv(tool), make_policy("human", ask=lambda obs, e: next(answers)), img, query)
    assert [s.kind for s in ep2.steps] == ["positive", "stop"]
    with pytest.raises(IbisInputError):
        make_policy("human")

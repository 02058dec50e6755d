"""Hand-computed cases for each reward term (spec section 5) and their mean."""

import numpy as np
import pytest

from ibisagent.env.protocol import format_response, parse_response
from ibisagent.rewards import (
    answer_score,
    click_score,
    format_score,
    length_score,
    make_env_reward,
    make_reward_funcs,
    pseg_score,
    score_terms,
)


def _sq():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 2:6] = True  # 16 pixels
    return gt


def click(kind, px, py, W=10, H=10):
    return parse_response(format_response("r", kind, (px + 0.5) / W, (py + 0.5) / H))


def test_format():
    assert format_score(format_response("ok", "positive", 0.1, 0.2)) == 1.0
    assert format_score(format_response("ok", "stop", answer="done")) == 1.0
    assert format_score("<action>\nPositive Point (0.1000, 0.2000)\n</action>") == 0.0  # no <think>
    assert format_score("<think>x</think><action>Terminate</action>") == 0.0  # stop without <answer>
    assert format_score("<think>x</think><action>Jump (0.1, 0.2)</action>") == 0.0
    assert format_score("<think>x</think><action>Positive Point (1.5, 0.2)</action>") == 0.0


def test_answer_bands_are_strict():
    a = click("positive", 3, 3)
    got = [answer_score(a, v) for v in (0.81, 0.80, 0.71, 0.70, 0.51, 0.50, 0.0)]
    assert got == [3.0, 2.0, 2.0, 1.0, 1.0, 0.0, 0.0]
    assert answer_score(parse_response("garbage"), 0.95) == 0.0


def test_answer_closed_form_is_exact_match():
    yes = parse_response(format_response("r", "stop", answer="Yes, it is visible."))
    no = parse_response(format_response("r", "stop", answer="No."))
    assert answer_score(yes, None, "Yes.", closed=True) == 3.0
    assert answer_score(no, None, "Yes.", closed=True) == 0.0
    assert answer_score(click("positive", 3, 3), 0.9, "Yes.", closed=True) == 0.0  # clicking is not answering
    other = parse_response(format_response("r", "stop", answer="Left  kidney!"))
    assert answer_score(other, None, "left kidney", closed=True) == 3.0
    # a segmentation question with a yes/no answer: contradicting it scores 0 whatever the IoU
    assert answer_score(no, 0.9, "Yes, the liver is present and segmented.") == 0.0
    assert answer_score(yes, 0.9, "Yes, the liver is present and segmented.") == 3.0


def test_click_in_the_right_error_region():
    gt = _sq()
    empty = np.zeros_like(gt)
    assert click_score(click("positive", 3, 3), empty, gt) == 1.0  # inside FN
    assert click_score(click("positive", 8, 8), empty, gt) == -1.0  # background
    assert click_score(click("negative", 3, 3), gt, gt) == -1.0  # removing a correct pixel
    extra = gt.copy()
    extra[8, 8] = True
    assert click_score(click("negative", 8, 8), extra, gt) == 1.0  # inside FP
    assert click_score(click("positive", 8, 8), extra, gt) == -1.0
    assert click_score(parse_response(format_response("r", "stop", answer="a")), empty, gt) == 0.0
    assert click_score(parse_response(format_response("r", "discard")), empty, gt) == 0.0


def test_pseg_and_length():
    a = click("positive", 3, 3)
    assert pseg_score(0.5, 0.4, a) == 1.0 and pseg_score(0.4, 0.4, a) == 0.0 and pseg_score(0.3, 0.4, a) == 0.0
    assert pseg_score(0.9, 0.4, parse_response(format_response("r", "stop", answer="a"))) == 0.0
    assert [length_score(s) for s in (1, 5, 6, 8)] == [1.0, 1.0, pytest.approx(-0.2), pytest.approx(-0.6)]


def test_mean_of_the_five_terms():
    gt = _sq()
    after = np.zeros_like(gt)
    after[2:6, 2:5] = True  # 12 of 16: IoU 0.75
    text = format_response("r", "positive", 3.5 / 10, 3.5 / 10)
    t = score_terms(text, np.zeros_like(gt), after, gt, prev_iou=0.0, step=7)
    assert (t["format"], t["ans"], t["click"], t["pseg"]) == (1.0, 2.0, 1.0, 1.0)
    assert t["len"] == pytest.approx(-0.4) and t["total"] == pytest.approx((1 + 2 + 1 + 1 - 0.4) / 5)
    stop = score_terms(format_response("r", "stop", answer="The liver is segmented."), after, after, gt, 0.75, 3)
    assert stop == {"format": 1.0, "ans": 2.0, "click": 0.0, "pseg": 0.0, "len": 1.0, "total": pytest.approx(0.8)}
    # the absent target: stopping with an empty mask is right
    none = np.zeros_like(gt)
    neg = score_terms(format_response("r", "stop", answer="No, there is no liver."), none, none, none, 1.0, 1, "No.")
    assert neg["ans"] == 3.0 and neg["total"] == pytest.approx((1 + 3 + 0 + 0 + 1) / 5)


def test_env_reward_adapter(tool, demo_samples):
    from ibisagent.clicker import next_click
    from ibisagent.env.env import IbisEnv
    from ibisagent.geometry import pixel_to_norm as normalise

    image, gt = demo_samples[0].load()
    H, W = gt.shape
    env = IbisEnv(tool, reward_fn=make_env_reward())
    env.reset(image, "Segment the liver.", gt)
    x, y, label, _ = next_click(np.zeros_like(gt), gt)
    _, reward, _, _, info = env.step(format_response("r", "positive", *normalise(x, y, W, H)))
    band = answer_score(parse_response(format_response("r", "positive", 0.5, 0.5)), info["iou"])
    assert reward == pytest.approx((1 + band + 1 + float(info["iou"] > 0) + 1) / 5)
    _, reward, *_ = env.step(format_response("r", "stop", answer="The liver is segmented."))
    assert reward == pytest.approx((1 + band + 0 + 0 + 1) / 5)
    _ = make_reward_funcs  # exercised on synthesized rows in tests/synth/test_synth_rewards_rows.py

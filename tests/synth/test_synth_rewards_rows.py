"""The TRL-style reward functions on synthesized step-level rows: the expert's own turns score
as the trajectory says (the scorer rebuilds each state with the tool)."""

import pytest

from ibisagent.rewards import IOU_BANDS, make_reward_funcs
from ibisagent.synth.export import rl_rows


def _band(v):
    return next((s for lo, s in IOU_BANDS if v > lo), 0.0)


def test_reward_funcs_score_expert_turns(synth_run, tool):
    out, _, trajs = synth_run
    rows = [r for r in rl_rows(trajs, out) if r["kind"] in ("segment", "discard", "self_correction", "vqa")]
    funcs = make_reward_funcs(tool)
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    completions = [[{"role": "assistant", "content": r["expert_response"]}] for r in rows]
    got = {name: f(completions, **cols) for name, f in funcs.items()}
    steps = {(t.id, s.index): (t, s) for t in trajs for s in t.steps}
    for i, r in enumerate(rows):
        t, s = steps[(r["traj_id"], r["step"])]
        assert got["s_format"][i] == 1.0
        if s.kind in ("positive", "negative"):
            assert got["s_click"][i] == 1.0  # the simulator clicks inside the error it fixes
            assert got["s_ans"][i] == _band(s.iou)
            assert got["s_pseg"][i] == float(s.iou > s.prev_iou)
        elif t.kind == "vqa":
            assert got["s_ans"][i] == 3.0 and got["s_click"][i] == 0.0
        assert got["s_len"][i] == (1.0 if r["step"] <= 5 else pytest.approx(-0.2 * (r["step"] - 5)))
        terms = [got[k][i] for k in ("s_format", "s_ans", "s_click", "s_pseg", "s_len")]
        assert got["s_total"][i] == pytest.approx(sum(terms) / 5)

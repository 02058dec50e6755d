"""The GRPO pieces by hand: group-normalised advantages, the clipped token-level loss, the data
order of a step, and one-line errors for bad configs."""

import numpy as np
import pytest

from ibisagent.errors import IbisInputError
from ibisagent.train.vlm.grpo import batch_indices, clipped_loss, group_advantages
from ibisagent.train.vlm.rl_config import RLRun


def test_group_advantages_hand_computed():
    r = np.array([1.0, 0.0, 0.5, 0.5, 2.0, 4.0])
    g = np.array([0, 0, 1, 1, 2, 2])
    a = group_advantages(r, g)
    assert a[:2] == pytest.approx([0.5 / (0.5 + 1e-4), -0.5 / (0.5 + 1e-4)])  # (r - 0.5) / (std 0.5 + eps)
    assert a[2:4] == pytest.approx([0.0, 0.0])  # equal rewards: no signal
    assert a[4:] == pytest.approx([-1 / (1 + 1e-4), 1 / (1 + 1e-4)])
    assert group_advantages(r, g, scale=False)[4:] == pytest.approx([-1.0, 1.0])


def test_clipped_loss_is_token_level_and_clips():
    import torch

    logp = torch.zeros(2, 3, requires_grad=True)
    old = torch.log(torch.tensor([[1.0, 1.0, 1.0], [1 / 1.5, 1.0, 1.0]]))  # row 1 token 0: ratio 1.5
    adv = torch.tensor([1.0, 1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, stats = clipped_loss(logp, old, adv, mask, n_tokens=5.0, eps=0.2, eps_high=0.2)
    # -(1 + 1 + 1.2 (clipped) + 1 + 1) / 5 agent tokens
    assert loss.item() == pytest.approx(-(4 + 1.2) / 5)
    assert stats["clip_ratio"] == pytest.approx(1 / 5)
    loss.backward()
    assert logp.grad[1, 0] == 0.0  # the clipped token carries no gradient
    assert logp.grad[0, 2] == 0.0  # nor does a masked (observation) token
    assert logp.grad[0, 0] == pytest.approx(-1 / 5)


def test_kl_term_is_zero_at_the_reference():
    import torch

    logp = torch.randn(2, 4)
    adv = torch.zeros(2)
    loss, stats = clipped_loss(logp, logp, adv, torch.ones(2, 4), 8.0, 0.2, 0.2, beta=0.1, ref=logp.clone())
    assert float(loss) == pytest.approx(0.0) and stats["kl"] == pytest.approx(0.0)


def test_data_order_depends_on_the_step_alone():
    n, b = 5, 3
    seen = [i for s in range(5) for i in batch_indices(s, b, n, seed=1)]  # three epochs
    for e in range(3):
        assert sorted(seen[e * n : (e + 1) * n]) == list(range(n))  # each epoch is a permutation
    assert batch_indices(3, b, n, seed=1) == batch_indices(3, b, n, seed=1)
    assert batch_indices(0, b, n, seed=1) != batch_indices(0, b, n, seed=2)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model: {tiny}\nbogus: 1\n", "unknown key(s) bogus"),
        ("model: {tiny}\nmode: online\ndata: [{{pairs: {pairs}}}]\n", "mode: 'online' is not one of"),
        ("model: {tiny}\nnum_generations: 1\ndata: [{{parquet: {pairs}}}]\n", "at least 2 rollouts"),
        ("model: /no/such/model\ndata: [{{pairs: {pairs}}}]\nmode: episode\n", "not a local model folder"),
        ("model: {tiny}\nmode: episode\ndata: [{{pairs: /no/pairs.csv}}]\n", "/no/pairs.csv not found"),
        ("model: {tiny}\ndata: [{{pairs: {pairs}}}]\n", "the step mode needs expert-prefix states"),
        ("model: {tiny}\nmode: episode\nrewards: {{s_bogus: 1}}\ndata: [{{pairs: {pairs}}}]\n", "unknown reward"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, demo_dir, text, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.format(tiny=tmp_path, pairs=demo_dir / "pairs.csv"))
    with pytest.raises(IbisInputError, match=expected.replace("(", r"\(").replace(")", r"\)")) as err:
        RLRun.from_yaml(cfg)
    assert "\n" not in str(err.value)


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    from typer.testing import CliRunner

    from ibisagent.cli.main import app

    res = CliRunner().invoke(app, ["train", "rl", "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2
    assert "no such config file" in res.output and "Traceback" not in res.output

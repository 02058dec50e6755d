"""The exemplar probe: a taught structure's belief fitted from a few examples, and where it applies."""

import torch

from ibisagent.policies.exemplar_probe import fit_probe


def toy_examples(n: int, seed: int, offset: float = 0.0):
    """n reduced maps (n x 8 x 64 x 64) whose channel 0 is high inside a square at a random place
    (the target, n x 64 x 64 in [0, 1]), and their pooled statistics (n x 512) near `offset`."""
    g = torch.Generator().manual_seed(seed)
    reduced = torch.randn(n, 8, 64, 64, generator=g)
    target = torch.zeros(n, 64, 64)
    for i in range(n):
        y, x = torch.randint(4, 44, (2,), generator=g).tolist()
        target[i, y : y + 16, x : x + 16] = 1
    reduced[:, 0] += 3 * target
    pooled = offset + 0.1 * torch.randn(n, 512, generator=g)
    return reduced, target, pooled


def belief_iou(logits, target):
    pred, ref = logits[:, 0] > 0, target > 0.5
    return ((pred & ref).sum() / (pred | ref).sum()).item()


def test_a_probe_from_five_examples_finds_the_structure_on_new_images():
    reduced, target, pooled = toy_examples(5, 0)
    probe = fit_probe(reduced, target, pooled, "square")
    new_reduced, new_target, _ = toy_examples(10, 1)
    with torch.no_grad():
        assert belief_iou(probe(new_reduced), new_target) > 0.6
    assert probe.examples == 5 and probe.structure == "square"


def test_the_probe_covers_images_like_its_examples_and_not_others():
    reduced, target, pooled = toy_examples(5, 0)
    probe = fit_probe(reduced, target, pooled, "square")
    assert probe.covers(toy_examples(4, 2)[2]).all()  # the same kind of image
    assert not probe.covers(toy_examples(4, 3, offset=2.0)[2]).any()  # another kind
    assert float(probe.radius) <= 0.9


def test_probes_are_saved_and_loaded_with_the_net(tmp_path):
    from ibisagent.policies.belief_net import load_net, save_net

    net = load_net()
    reduce = net.config.reduce
    reduced, target, pooled = toy_examples(5, 0)
    reduced = torch.cat([reduced, torch.zeros(5, reduce - 8, 64, 64)], 1)
    net.probes["square"] = fit_probe(reduced, target, pooled, "square")
    loaded = load_net(save_net(net, tmp_path / "p.pt"))
    assert list(loaded.probes) == ["square"] and loaded.probes["square"].examples == 5
    with torch.no_grad():
        assert torch.allclose(loaded.probes["square"](reduced), net.probes["square"](reduced), atol=1e-5)

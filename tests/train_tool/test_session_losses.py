"""One simulated interactive session of `train tool`: finite loss, gradients on the prompt path only."""

import random

import numpy as np
import pytest


@pytest.mark.parametrize("p_box", [0.0, 1.0])
def test_session_loss_is_finite_and_trains_the_prompt_path(demo_samples, tool, p_box):
    import torch

    from ibisagent.tools.litemedsam_model import build_model
    from ibisagent.train.tool.recipe import ToolTrainConfig, TrainItem, click_tensors, session_losses, target_in_frame

    items = []
    for s in demo_samples[:2]:
        image, gt = s.load()
        emb = tool.embed(image)
        items.append(TrainItem(emb.features[0].half(), target_in_frame(gt, emb.input_size), emb.input_size, s.id))
    net, _ = build_model("original")
    net.image_encoder.requires_grad_(False)
    cfg = ToolTrainConfig(max_clicks=3, p_box=p_box, p_refine=0.0)
    loss, stats = session_losses(net, items, cfg, random.Random(0))
    assert torch.isfinite(loss) and stats["mode"] == ("box" if p_box else "clicks")
    loss.backward()
    assert net.mask_decoder.output_upscaling[0].weight.grad is not None
    assert all(p.grad is None for p in net.image_encoder.parameters())

    pts, labs = click_tensors([[(1, 2, 1), (3, 4, 0)], [(5, 6, 1), (0, 0, -1)]])
    assert pts.shape == (2, 2, 2) and pts.dtype == torch.float32
    assert labs.tolist() == [[1, 0], [1, -1]]
    assert np.isfinite(stats["iou_last"])


def test_click_disks_cover_real_clicks_only():
    from ibisagent.train.tool.recipe import click_disks

    d = click_disks([[(10, 20, 1), (0, 0, -1)], [(100, 5, 0)]], size=128, radius=3)
    assert d.shape == (2, 128, 128)
    assert d[0, 20, 10] == 1 and d[0, 20, 13] == 1 and d[0, 20, 14] == 0
    assert d[0, 0, 0] == 0  # the padding point is not a click
    assert d[1, 5, 100] == 1 and d[1].sum() == d[0].sum()


def test_click_loss_adds_a_term_that_can_only_raise_the_loss(demo_samples, tool):
    import torch

    from ibisagent.tools.litemedsam_model import build_model
    from ibisagent.train.tool.recipe import ToolTrainConfig, TrainItem, session_losses, target_in_frame

    s = demo_samples[0]
    image, gt = s.load()
    emb = tool.embed(image)
    items = [TrainItem(emb.features[0].half(), target_in_frame(gt, emb.input_size), emb.input_size, s.id)]
    net, _ = build_model("original")
    losses = []
    for weight in (0.0, 1.0):
        cfg = ToolTrainConfig(max_clicks=2, p_box=0.0, p_refine=0.0, click_loss=weight)
        with torch.no_grad():
            loss, _ = session_losses(net, items, cfg, random.Random(3))
        losses.append(float(loss))
    assert losses[1] > losses[0]

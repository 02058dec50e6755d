"""A taught structure's belief from its few examples: a per-cell probe on the image embedding.

When a person teaches the compact policy a structure from five image/mask pairs of their own kind of
image (`ibisagent teach`), the belief network's text-conditioned layers have too little to go on, and
fine-tuning them costs what the policy knew. A probe fits those pairs alone: a small per-cell model
(a 16-unit MLP, or a logistic regression) on each cell of the 64 x 64 map, reading the whitened principal components the belief net already reads
(`BeliefNet.reduce`), the same components averaged over 5 x 5 and 15 x 15 cell neighbourhoods (what
surrounds the cell) and the cell's position (x, y and their products: where the structure lies in
this kind of image). It is fitted in seconds, touches no other weights (nothing is forgotten), and
answers only on images like those it was taught on (`ExemplarProbe.covers`: the pooled embedding
near the taught images'); elsewhere the belief net answers as before.

forward(reduced B x reduce x 64 x 64) -> belief logits B x 1 x 64 x 64 (the tool's 256 x 256 input
frame, 4 px a cell).
"""

from __future__ import annotations

import torch
from torch import nn

CONTEXT = (5, 15)  # neighbourhood sizes, in cells, whose mean components join each cell's own
POSITION = 5  # x, y, x*x, y*y, x*y with x, y in [-1, 1]


def position_maps(side: int) -> torch.Tensor:
    """POSITION x side x side: x, y (left/top -1 to right/bottom +1) and their products."""
    lin = torch.linspace(-1, 1, side)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([xx, yy, xx * xx, yy * yy, xx * yy])


class ExemplarProbe(nn.Module):
    """See the module docstring. `structure`: the taught name; `centre` (512) and `radius`: the taught
    images' pooled embeddings (`belief_net.pool_features`, standardised by the presence head's
    statistics) averaged, and the distance within which an image counts as one of their kind;
    `examples`: how many pairs it was fitted on."""

    def __init__(self, reduce: int, structure: str = "", hidden: int = 0):
        super().__init__()
        self.structure, self.hidden = structure, hidden
        n = reduce * (1 + len(CONTEXT)) + POSITION  # inputs per cell (`features`)
        self.cell = (
            nn.Sequential(nn.Conv2d(n, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1)) if hidden else nn.Conv2d(n, 1, 1)
        )
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.register_buffer("centre", torch.zeros(512))
        self.register_buffer("radius", torch.tensor(0.0))
        self.register_buffer("n_examples", torch.tensor(0))

    @property
    def examples(self) -> int:
        """How many image/mask pairs the probe was fitted on."""
        return int(self.n_examples)

    @staticmethod
    def raw_features(reduced: torch.Tensor) -> torch.Tensor:
        """reduced B x reduce x S x S -> B x (reduce x 3 + POSITION) x S x S: each cell's components,
        their means over the CONTEXT neighbourhoods, its position."""
        B, _, S, _ = reduced.shape
        ctx = [nn.functional.avg_pool2d(reduced, k, 1, k // 2, count_include_pad=False) for k in CONTEXT]
        pos = position_maps(S).to(reduced)[None].expand(B, -1, -1, -1)
        return torch.cat([reduced, *ctx, pos], 1)

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        """`raw_features` B x C x S x S -> the same in the taught examples' standard deviations."""
        return (raw - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def features(self, reduced: torch.Tensor) -> torch.Tensor:
        """reduced B x reduce x S x S -> the probe's standardised inputs."""
        return self.standardise(self.raw_features(reduced))

    def forward(self, reduced: torch.Tensor) -> torch.Tensor:
        return self.cell(self.features(reduced))

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """Standardised pooled embeddings B x 512 -> B distances (RMS over dimensions) to the taught centre."""
        return (pooled - self.centre).pow(2).mean(-1).sqrt()

    def covers(self, pooled: torch.Tensor) -> torch.Tensor:
        """B bool: images of the kind the probe was taught on (within `radius` of its centre)."""
        return self.distance(pooled) <= self.radius


def fit_probe(
    reduced: torch.Tensor,
    target: torch.Tensor,
    pooled: torch.Tensor,
    structure: str,
    steps: int = 200,
    weight_decay: float = 1e-3,
    radius_scale: float = 1.5,
    max_radius: float = 0.9,
    hidden: int = 16,
) -> ExemplarProbe:
    """Fit a probe on N taught examples: `reduced` N x reduce x 64 x 64 (`BeliefNet.reduce`),
    `target` N x 64 x 64 in [0, 1] (the share of each cell inside the mask, `sft.pooled_target`),
    `pooled` N x 512 standardised pooled embeddings. Class-balanced cross-entropy (targets are often
    a few % of the cells) with L2 `weight_decay`, full batch, L-BFGS; `hidden` units (0: linear). The
    radius is `radius_scale` x the largest distance of a taught image to the centre, at most
    `max_radius` (a spread-out set of examples must not claim other kinds of image)."""
    torch.manual_seed(0)
    probe = ExemplarProbe(reduced.shape[1], structure, hidden)
    with torch.no_grad():
        raw = probe.raw_features(reduced.float())
        flat = raw.permute(0, 2, 3, 1).reshape(-1, raw.shape[1])
        probe.mean.copy_(flat.mean(0))
        probe.std.copy_(flat.std(0).clamp_min(1e-4))
        x = probe.standardise(raw)
    y = target.float()[:, None]
    share = float(y.mean().clamp(1e-4, 1 - 1e-4))
    weight = torch.where(y > 0.5, 0.5 / share, 0.5 / (1 - share))
    opt = torch.optim.LBFGS(
        probe.cell.parameters(), lr=0.5, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        logits = probe.cell(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y, weight=weight)
        loss = loss + weight_decay * sum(p.pow(2).sum() for n, p in probe.cell.named_parameters() if "weight" in n)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        probe.centre.copy_(pooled.mean(0))
        spread = probe.distance(pooled).max()
        probe.radius.fill_(min(float(radius_scale * spread.clamp_min(1e-3)), max_radius))
        probe.n_examples.fill_(len(reduced))
    return probe.eval()

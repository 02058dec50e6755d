"""The compact policy's belief network: where is the queried target, and is it there at all.

forward(features B x 256 x 64 x 64, text B x 384) -> (belief logits B x 1 x 64 x 64, presence
logit B). The features are LiteMedSAM's image embedding (64 x 64 cells over the tool's 256 x 256
input frame); the text is the query's unit-norm MiniLM sentence embedding. Configured by
`BeliefNetConfig`, built by `BeliefNet(config)`, saved and loaded (fp16, with its config) by
`save_net` / `load_net`. `policies.compact` plays it; `train.compact.sft` trains it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ibisagent.errors import IbisInputError
from ibisagent.policies.exemplar_probe import ExemplarProbe, position_maps

WEIGHTS = Path(__file__).parent / "weights" / "compact_policy.pt"
LAYOUT = 3  # the saved format: a file of another layout is refused with "retrain"


@dataclass
class BeliefNetConfig:
    """`hidden`: channels of the trunk; `text_dim`: the query embedding's size (MiniLM: 384);
    `reduce`: principal components the 256-channel embedding is projected onto first (frozen,
    set by `train.compact.sft.fit_reduction`: training then reads precomputed reduced maps, a quarter
    of the memory traffic, about twice the steps per CPU minute); `dilations`: one FiLM block per
    entry, 3 x 3 convs with that dilation ((1, 2, 4, 8) sees 31 x 31 cells, all 1s 9 x 9);
    `dropout`: spatial dropout of each block's output in training mode (no weights, not saved);
    `coarse`: FiLM blocks on a 16 x 16 copy of the map at twice the width (stride-4 conv in,
    upsampled and added back before the last full-resolution block), each at a quarter of a
    full-resolution block's multiply-adds."""

    hidden: int = 64
    text_dim: int = 384
    reduce: int = 64
    dilations: tuple[int, ...] = field(default=(1, 1, 1, 1))
    dropout: float = 0.0
    coarse: int = 0


def pool_features(feats: torch.Tensor) -> torch.Tensor:
    """B x 256 x 64 x 64 image embedding -> B x 512 (mean and max over space)."""
    return torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], 1)


class FiLMBlock(nn.Module):
    """A residual 3 x 3 conv block whose GroupNorm output is scaled and shifted by the text."""

    def __init__(self, text_dim: int, width: int, dilation: int, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation)
        self.norm = nn.GroupNorm(8, width)
        self.film = nn.Linear(text_dim, 2 * width)
        self.dropout = dropout

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """h B x width x S x S, t B x text_dim -> B x width x S x S"""
        gamma, beta = self.film(t).chunk(2, dim=-1)
        y = torch.relu(self.norm(self.conv(h)) * (1 + gamma[..., None, None]) + beta[..., None, None])
        return h + (nn.functional.dropout2d(y, self.dropout, self.training) if self.dropout else y)


class PresenceHead(nn.Module):
    """Is the queried target in the image at all? Absence here means the query names a body region
    the image does not show, which the raw embedding pooled over space (its modality and anatomy,
    `pool_features`) tells best; so this head reads that, not the belief trunk. mu/sd: the training
    set's feature statistics, set by `train.compact.sft.fit_presence`."""

    def __init__(self, text_dim: int, width: int = 128):
        super().__init__()
        self.register_buffer("mu", torch.zeros(512))
        self.register_buffer("sd", torch.ones(512))
        self.image = nn.Sequential(nn.Linear(512, width), nn.ReLU(), nn.Dropout(0.2), nn.Linear(width, width))
        self.text = nn.Sequential(nn.Linear(text_dim, width), nn.ReLU(), nn.Linear(width, width))
        self.out = nn.Sequential(nn.Linear(3 * width, width), nn.ReLU(), nn.Linear(width, 1))

    def standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled B x 512 (`pool_features`) -> the same in the training set's standard deviations."""
        return (pooled - self.mu) / self.sd

    def forward(self, pooled: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """pooled B x 512, text B x text_dim -> presence logit B."""
        a, b = self.image(self.standardise(pooled)), self.text(text)
        return self.out(torch.cat([a, b, a * b], 1))[:, 0]


class BeliefNet(nn.Module):
    """See the module docstring. `known_texts` / `known_emb` (K x text_dim, unit norm): the training
    queries, so that a query far from all of them is recognised as new (`CompactPolicy.novelty`)."""

    def __init__(self, config: BeliefNetConfig):
        super().__init__()
        self.config = c = config
        # reduce(): whitened principal components of the embedding (fit_reduction sets them)
        self.register_buffer("reduce_weight", torch.eye(c.reduce, 256))
        self.register_buffer("reduce_bias", torch.zeros(c.reduce))
        self.proj = nn.Conv2d(c.reduce + 2, c.hidden, 1)  # + (x, y) coordinates: "left", "upper", ...
        self.blocks = nn.ModuleList([FiLMBlock(c.text_dim, c.hidden, d, c.dropout) for d in c.dilations])
        if c.coarse:
            wide = 2 * c.hidden
            self.down = nn.Conv2d(c.hidden, wide, 4, stride=4)
            self.coarse = nn.ModuleList([FiLMBlock(c.text_dim, wide, 1, c.dropout) for _ in range(c.coarse)])
            self.up = nn.Conv2d(wide, c.hidden, 1)
        self.head = nn.Conv2d(c.hidden, 1, 1)
        self.presence = PresenceHead(c.text_dim)
        self.known_texts: list[str] = []
        self.known_emb = torch.zeros(0, c.text_dim)
        # taught structures' probes (`exemplar_probe`), by structure name; saved beside the state dict
        self.probes: dict[str, ExemplarProbe] = {}

    def reduce(self, feats: torch.Tensor) -> torch.Tensor:
        """B x 256 x 64 x 64 embedding -> B x reduce x 64 x 64 whitened principal components."""
        return nn.functional.conv2d(feats, self.reduce_weight[..., None, None], self.reduce_bias)

    def trunk(self, reduced: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """reduced B x reduce x 64 x 64 (`reduce`), text B x text_dim -> hidden map B x hidden x 64 x 64"""
        B = reduced.shape[0]
        coords = position_maps(reduced.shape[-1])[:2].to(reduced.device)[None].expand(B, -1, -1, -1)
        h = torch.relu(self.proj(torch.cat([reduced, coords], 1)))
        for blk in self.blocks[:-1]:
            h = blk(h, text)
        if self.config.coarse:
            h = h + self.coarse_view(h, text)
        for blk in self.blocks[-1:]:
            h = blk(h, text)
        return h

    def coarse_view(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """hidden map B x hidden x 64 x 64 -> the coarse blocks' answer at the same shape."""
        g = self.down(h)
        for blk in self.coarse:
            g = blk(g, text)
        return nn.functional.interpolate(self.up(g), size=h.shape[-2:], mode="bilinear")

    def belief(self, reduced: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """-> belief logits B x 1 x 64 x 64"""
        return self.head(self.trunk(reduced, text))

    def forward(self, feats: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.belief(self.reduce(feats), text), self.presence(pool_features(feats), text)


def load_net(path: str | Path | None = None) -> BeliefNet:
    """The net saved at `path` (default: the shipped weights), in eval mode, float32."""
    path = Path(path) if path else WEIGHTS
    if not path.exists():
        raise IbisInputError(path, "compact policy weights not found (train them with: ibisagent train compact)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    arch = blob.get("arch", {})
    if arch.get("layout") != LAYOUT:
        raise IbisInputError(path, "compact weights of an older layout; retrain with: ibisagent train compact")
    config = BeliefNetConfig(
        hidden=arch["hidden"],
        reduce=arch["reduce"],
        dilations=tuple(arch.get("dilations", (1, 1, 1, 1))),
        coarse=arch.get("coarse", 0),
    )
    net = BeliefNet(config)
    net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    known = blob.get("known_queries") or {}
    net.known_texts, net.known_emb = list(known.get("texts", [])), known.get("emb", net.known_emb).float()
    for saved in blob.get("probes", []):
        probe = ExemplarProbe(config.reduce, saved["structure"], saved.get("hidden", 0))
        probe.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
        net.probes[probe.structure] = probe.eval()
    return net.eval()


def save_net(net: BeliefNet, path: Path, **meta) -> Path:
    """fp16 weights + architecture (+ training metadata), written atomically."""
    import io

    from ibisagent.io.images import atomic_write_bytes

    buf = io.BytesIO()
    state = {k: v.half() for k, v in net.state_dict().items()}
    known = {"texts": list(net.known_texts), "emb": net.known_emb.half()}
    c = asdict(net.config)
    arch = {"hidden": c["hidden"], "reduce": c["reduce"], "dilations": list(c["dilations"]), "coarse": c["coarse"]}
    probes = [{"structure": k, "hidden": p.hidden, "state_dict": p.state_dict()} for k, p in net.probes.items()]
    blob = {"state_dict": state, "arch": {**arch, "layout": LAYOUT}, "known_queries": known, "probes": probes}
    torch.save({**blob, **meta}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path

"""The compact click policy: the default agent on a laptop, no VLM needed.

It plays the same game as the VLM through the same environment and protocol. From the
segmentation tool's image embedding (already computed for the tool, so free), the query's
sentence embedding (MiniLM, offline) and nothing else, a small FiLM-conditioned conv net
predicts a *belief map* of where the queried target is (64 x 64 logits over the tool's
256 x 256 input frame) and whether the target is present at all. Each step it compares the
belief with the current mask and acts like the annotator of the click simulator would if the
belief were the truth: a positive click at the deepest point the mask misses, a negative
click at the deepest point it wrongly covers, stop when they agree. The text it writes states
exactly those facts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.errors import IbisInputError
from ibisagent.eval.metrics import iou
from ibisagent.policies.base import Policy
from ibisagent.policies.oracle import next_click, normalise

WEIGHTS = Path(__file__).parent / "weights" / "compact_policy.pt"
GRID = 64  # belief-map side; one cell is 4 x 4 pixels of the 256 x 256 tool frame


def build_net(hidden: int = 64, text_dim: int = 384):
    """The belief network. forward(features B x 256 x 64 x 64, text B x 384) ->
    (belief logits B x 1 x 64 x 64, presence logit B)."""
    import torch
    from torch import nn

    class FiLMBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(hidden, hidden, 3, padding=1)
            self.norm = nn.GroupNorm(8, hidden)
            self.film = nn.Linear(text_dim, 2 * hidden)

        def forward(self, h, t):
            gamma, beta = self.film(t).chunk(2, dim=-1)
            y = self.norm(self.conv(h)) * (1 + gamma[..., None, None]) + beta[..., None, None]
            return h + torch.relu(y)

    class CompactNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(256 + 2, hidden, 1)  # + (x, y) coordinates: "left", "upper", ...
            self.blocks = nn.ModuleList([FiLMBlock() for _ in range(4)])
            self.head = nn.Conv2d(hidden, 1, 1)
            self.presence = nn.Sequential(nn.Linear(2 * hidden + text_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def trunk(self, feats, text):
            """-> (hidden map B x hidden x 64 x 64, pooled B x (2 hidden + text_dim))"""
            B = feats.shape[0]
            lin = torch.linspace(-1, 1, feats.shape[-1], device=feats.device)
            yy, xx = torch.meshgrid(lin, lin, indexing="ij")
            coords = torch.stack([xx, yy])[None].expand(B, -1, -1, -1)
            h = torch.relu(self.proj(torch.cat([feats, coords], 1)))
            for blk in self.blocks:
                h = blk(h, text)
            return h, torch.cat([h.amax((2, 3)), h.mean((2, 3)), text], 1)

        def forward(self, feats, text):
            h, pooled = self.trunk(feats, text)
            return self.head(h), self.presence(pooled)[:, 0]

    return CompactNet()


def load_net(path: str | Path | None = None):
    import torch

    path = Path(path) if path else WEIGHTS
    if not path.exists():
        raise IbisInputError(path, "compact policy weights not found (train them with: ibisagent train compact)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = build_net(**blob.get("arch", {}))
    net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    return net.eval()


def save_net(net, path: Path, **meta) -> Path:
    """fp16 weights + architecture (+ training metadata), written atomically."""
    import io

    import torch

    from ibisagent.io.images import atomic_write_bytes

    buf = io.BytesIO()
    state = {k: v.half() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "arch": {"hidden": net.blocks[0].conv.in_channels}, **meta}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def belief_mask(logits, emb) -> np.ndarray:
    """64 x 64 belief logits -> H x W bool at the original image size."""
    import torch.nn.functional as F

    from ibisagent.tools.litemedsam import LOWRES, logits_to_mask

    up = F.interpolate(logits.reshape(1, 1, GRID, GRID), size=(LOWRES, LOWRES), mode="bilinear", align_corners=False)
    return logits_to_mask(up, emb.input_size, emb.original_size)


def where(mask: np.ndarray) -> str:
    """Position words for a mask's centre: "upper left", "centre", ..."""
    ys, xs = np.nonzero(mask)
    H, W = mask.shape
    cx, cy = xs.mean() / W, ys.mean() / H
    v = "upper" if cy < 0.4 else "lower" if cy > 0.6 else ""
    h = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    return " ".join(w for w in (v, h) if w) or "central"


class CompactPolicy(Policy):
    """See the module docstring. `stop_iou`: stop once the mask and the belief agree this well;
    `presence_threshold`: below it the target is judged absent and the policy stops at once."""

    name = "compact"

    def __init__(self, weights: str | Path | None = None, stop_iou: float = 0.85, presence_threshold: float = 0.5):
        self.net = load_net(weights)
        self.stop_iou = stop_iou
        self.presence_threshold = presence_threshold
        self.tool = None
        self._belief_key = None

    def attach(self, tool) -> None:
        if not hasattr(tool, "embed") or tool.__class__.__name__ != "LiteMedSAMTool":
            raise IbisInputError(getattr(tool, "name", tool), "the compact policy reads LiteMedSAM image embeddings")
        self.tool = tool

    def begin(self, query: str, gt_mask=None) -> None:
        self._belief_key = None

    def belief(self, image: np.ndarray, query: str) -> tuple[np.ndarray, float]:
        """(H x W bool belief of the target, presence probability), cached per (image, query)."""
        import torch

        from ibisagent.policies.text_encoder import embed_texts
        from ibisagent.tools.litemedsam import LiteMedSAMTool

        if self.tool is None:
            self.tool = LiteMedSAMTool()
        emb = self.tool.embed(image)
        key = (emb.key, query)
        if self._belief_key != key:
            with torch.inference_mode():
                logits, presence = self.net(emb.features.float(), embed_texts([query]))
            self._belief = (belief_mask(logits, emb), float(torch.sigmoid(presence[0])))
            self._belief_key = key
        return self._belief

    def act(self, obs: Observation, episode: Episode) -> str:
        target, p_present = self.belief(obs.original, obs.query)
        H, W = target.shape
        if p_present < self.presence_threshold:
            return format_response(
                f"I look for what the query asks for and judge it absent (confidence it is present: {p_present:.2f}).",
                "stop",
                answer="No, the target is not visible in this image.",
            )
        if not target.any():
            return format_response(
                f"The target may be present (confidence {p_present:.2f}), but no region of the image reaches 50% "
                "belief, so I cannot place a click on it.",
                "stop",
                answer="I could not locate the target in this image.",
            )
        area = 100 * target.mean()
        seen = f"The target I see covers about {area:.1f}% of the image, in the {where(target)} part."
        agree = iou(obs.mask, target)
        click = next_click(obs.mask, target)
        if click is None or (obs.mask.any() and agree >= self.stop_iou):
            return format_response(
                f"{seen} The mask now matches it (overlap {agree:.2f}), so I stop.",
                "stop",
                answer="Yes, the target is segmented.",
            )
        x, y, label, depth = click
        nx, ny = normalise(x, y, W, H)
        if not obs.mask.any():
            why = f"{seen} There is no mask yet, so I place a positive point deep inside it."
        elif label == 1:
            why = f"{seen} The mask (overlap {agree:.2f}) misses a part about {2 * depth:.0f} px across; I add a positive point there."
        else:
            why = f"{seen} The mask (overlap {agree:.2f}) spills over a region about {2 * depth:.0f} px across; I add a negative point there."
        return format_response(why, "positive" if label == 1 else "negative", nx, ny)

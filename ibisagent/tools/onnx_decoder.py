"""LiteMedSAM's prompt encoder + mask decoder for clicks, run by ONNX Runtime.

The decoder answers every click of an episode, so its speed sets the cost of an episode once the
image is embedded. The graph covers the click strategies ("points", "points+prior") with a
single-mask output: features 1 x 256 x 64 x 64, points 1 x N x 2 (x, y) in model-input pixels,
labels 1 x N (1 positive, 0 negative, -1 padding) as float, mask_input 1 x 1 x 256 x 256 logits
and has_mask (1,) in {0, 1} -> low-res logits 1 x 1 x 256 x 256 and the predicted IoU 1 x 1.
Box prompts and multimask output stay on torch. Point embedding follows segment-anything's own
ONNX export (arithmetic masks instead of boolean indexing); outputs match torch to ~1e-4.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def build_graph_module(net):
    """A torch module with the graph's signature (see the module docstring)."""
    import torch
    from torch import nn

    from ibisagent.tools.litemedsam_model import decode_embedded

    class DecoderGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.pe, self.md = net.prompt_encoder, net.mask_decoder  # registered: exported with the graph

        def embed_points(self, points, labels):
            points = points + 0.5  # pixel centres, as SAM's prompt encoder
            pad_pt = torch.zeros((1, 1, 2), dtype=points.dtype)
            pad_lab = -torch.ones((1, 1), dtype=labels.dtype)
            points, labels = torch.cat([points, pad_pt], 1), torch.cat([labels, pad_lab], 1)
            emb = self.pe.pe_layer.forward_with_coords(points, self.pe.input_image_size)
            lab = labels[..., None]
            emb = emb * (lab != -1).float() + self.pe.not_a_point_embed.weight * (lab == -1).float()
            for i, point_embed in enumerate(self.pe.point_embeddings):
                emb = emb + point_embed.weight * (lab == i).float()
            return emb

        def forward(self, features, points, labels, mask_input, has_mask):
            sparse = self.embed_points(points, labels)
            no_mask = self.pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
            dense = has_mask * self.pe.mask_downscaling(mask_input) + (1 - has_mask) * no_mask
            return decode_embedded(net, features, sparse, dense)

    return DecoderGraph().eval()


def graph_path(net, cache_dir: Path | None = None) -> Path:
    """Cache file keyed by the prompt-path weights (original, click-trained or a user's) and torch."""
    import torch

    from ibisagent.tools.litemedsam_model import prompt_path_state
    from ibisagent.tools.onnx_encoder import DEFAULT_DIR

    h = hashlib.sha1(f"{torch.__version__}|decoder-v2".encode())
    for k, v in sorted(prompt_path_state(net, half=False).items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return (cache_dir or DEFAULT_DIR) / f"litemedsam-decoder-{h.hexdigest()[:16]}.onnx"


def export(net, path: Path) -> None:
    """Write the graph (dynamic number of points) atomically."""
    import tempfile
    import warnings

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    args = (
        torch.zeros(1, 256, 64, 64),
        torch.zeros(1, 2, 2),
        torch.ones(1, 2),
        torch.zeros(1, 1, 256, 256),
        torch.ones(1),
    )
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".onnx.part", delete=False) as fh:
        tmp = Path(fh.name)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                build_graph_module(net),
                args,
                str(tmp),
                opset_version=17,
                dynamo=False,
                input_names=["features", "points", "labels", "mask_input", "has_mask"],
                output_names=["low_res_logits", "iou"],
                dynamic_axes={"points": {1: "n"}, "labels": {1: "n"}},
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxDecoder:
    """decode(features, points, labels, mask_input) -> (low-res logits, IoU) as torch tensors."""

    def __init__(self, net, threads: int, cache_dir: Path | None = None):
        import onnxruntime as ort

        self.path = graph_path(net, cache_dir)
        if not self.path.exists():
            export(net, self.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._no_mask = np.zeros((1, 1, 256, 256), np.float32)

    def __call__(self, features, points, labels, mask_input=None):
        """features 1 x 256 x 64 x 64, points 1 x N x 2, labels 1 x N, mask_input 1 x 1 x 256 x 256 or None."""
        import torch

        feed = {
            "features": features.detach().float().contiguous().numpy(),
            "points": points.detach().float().numpy(),
            "labels": labels.detach().float().numpy(),
            "mask_input": self._no_mask if mask_input is None else mask_input.detach().float().contiguous().numpy(),
            "has_mask": np.array([0.0 if mask_input is None else 1.0], np.float32),
        }
        low, iou = self.session.run(None, feed)
        return torch.from_numpy(low), torch.from_numpy(iou)

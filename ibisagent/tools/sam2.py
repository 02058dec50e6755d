"""SAM2 / MedSAM2 backend: a SAM2 image model from a user-given config and checkpoint, on CPU.

Needs the optional `sam2` package (PyPI `sam2==1.1.0`), installed WITHOUT its dependencies, because
it declares torchvision (PyPI's build is CUDA and does not load beside the CPU torch):
`EXTRAS=dev,compact,fast,sam2 scripts/install.sh`, or by hand
`pip install -c constraints.txt 'ibisagent[sam2]'` then
`SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0`.

torchvision in `sam2`: only `sam2.utils.transforms` (imported by `sam2.sam2_image_predictor`) and
`sam2.automatic_mask_generator` import it. This module imports neither; it does what
`SAM2ImagePredictor` does (set_image, predict) on the model itself, with torch alone:
- set_image: image to [0, 1], resized to `image_size` x `image_size` without keeping the aspect ratio
  (torchvision's `Resize` on a tensor is `F.interpolate(bilinear, antialias=True)`), ImageNet
  mean/std, `forward_image`, `_prepare_backbone_features`, `no_mem_embed` added to the lowest-res map;
- predict: points (x, y) scaled by image_size / (W, H), a box as two corner points with labels 2, 3
  placed first, `sam_prompt_encoder` (points, mask input), `sam_mask_decoder` with the high-res
  features, logits resized bilinearly to the original size and thresholded at 0; the low-res logits
  returned are clamped to [-32, 32] as the predictor does.
The model is built with `sam2.build_sam.build_sam2` (hydra; the same post-processing overrides as the
image predictor) and the checkpoint is loaded here, strictly, with one-line errors.

Configs: a path to a yaml file (e.g. MedSAM2's `sam2.1_hiera_t512.yaml`) or the name of a config
shipped inside the sam2 package (e.g. `configs/sam2.1/sam2.1_hiera_t.yaml`). Checkpoints: a torch
file holding `{"model": state_dict}` (the sam2 / MedSAM2 format) or a bare state dict.

Shapes: embedding = the `image_size`/16 image embedding plus the two high-res maps; logits are
1 x 1 x L x L with L = image_size / 4 (256 for SAM2.1 at 1024, 128 for MedSAM2 at 512).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.tools.base import Embedding, SegmentationTool, ToolResult

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRIOR_LOGIT = 8.0  # magnitude of the logits standing in for a given binary mask (as LiteMedSAM's)
LOGIT_CLAMP = 32.0  # SAM2ImagePredictor clamps the returned low-res logits to +-32
INSTALL_HINT = (
    "the sam2 package is not installed; run EXTRAS=dev,compact,fast,sam2 scripts/install.sh, or "
    "pip install -c constraints.txt 'ibisagent[sam2]' && "
    "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0 (see README)"
)
# hydra's config search path is process-global: build one model at a time
_BUILD_LOCK = threading.Lock()


def parse_spec(rest: str) -> tuple[str, str]:
    """Split the part after "sam2:" ("CONFIG.yaml:CHECKPOINT") into (config, checkpoint).

    Split after the first ".yaml:" / ".yml:", so either path may itself contain ':' (a Windows
    drive, an odd file name) as long as the config ends in .yaml or .yml. For anything else pass
    make_tool("sam2", config=..., checkpoint=...).
    """
    low = rest.lower()
    cuts = [i + len(ext) for ext in (".yaml:", ".yml:") if (i := low.find(ext)) >= 0]
    if not cuts:
        raise IbisInputError(
            rest or "sam2", "expected sam2:CONFIG.yaml:CHECKPOINT (a .yaml config path or sam2 config name, then :)"
        )
    cut = min(cuts)
    config, checkpoint = rest[: cut - 1], rest[cut:]
    if not checkpoint:
        raise IbisInputError(rest, "no checkpoint after the config; expected sam2:CONFIG.yaml:CHECKPOINT")
    return config, checkpoint


def require_sam2() -> None:
    """A one-line error naming the install command when the optional `sam2` package is missing."""
    if importlib.util.find_spec("sam2") is None:
        raise IbisInputError("sam2", INSTALL_HINT)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0][:200]}" if text else exc.__class__.__name__


def build_model(config: str | Path):
    """The SAM2 model (SAM2Base, eval mode, CPU, random weights) described by `config`: a yaml
    file path, or a config name inside the sam2 package. Errors are IbisInputError naming `config`."""
    require_sam2()
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from sam2.build_sam import build_sam2

    path = Path(config).expanduser()
    if path.is_file():
        # A user's file, e.g. MedSAM2's: search its own folder, not the package's configs.
        folder, name = str(path.resolve().parent), path.name

        def context():
            return initialize_config_dir(folder, version_base="1.2")
    else:
        shipped = importlib.util.find_spec("sam2")
        base = Path(next(iter(shipped.submodule_search_locations)))
        if not str(config).endswith((".yaml", ".yml")) or not (base / str(config)).is_file():
            raise IbisInputError(
                config,
                "no such config file, nor a config shipped in the sam2 package "
                "(e.g. configs/sam2.1/sam2.1_hiera_t.yaml)",
            )
        # the same search path `import sam2` sets up, made explicit in case something cleared hydra
        name = str(config)

        def context():
            return initialize_config_module("sam2", version_base="1.2")

    with _BUILD_LOCK:
        # `import sam2` initialises hydra's process-global search path to the package's configs, and
        # hydra refuses to initialise twice: keep that state, clear it, compose ours, put it back
        # (get_gh_backup / restore_gh_from_backup are what hydra's own initialize_* use on exit).
        saved = get_gh_backup()
        GlobalHydra.instance().clear()
        try:
            with context():
                # apply_postprocessing=True: the overrides SAM2ImagePredictor.from_pretrained gets
                # (dynamic multimask fallback when the single mask is unstable)
                model = build_sam2(name, ckpt_path=None, device="cpu", mode="eval", apply_postprocessing=True)
        except MissingConfigException as exc:
            raise IbisInputError(config, f"hydra cannot find this config ({_first_line(exc)})") from None
        except Exception as exc:
            raise IbisInputError(config, f"cannot build a SAM2 model from this config ({_first_line(exc)})") from None
        finally:
            restore_gh_from_backup(saved)
    for attr in ("forward_image", "sam_prompt_encoder", "sam_mask_decoder", "image_size"):
        if not hasattr(model, attr):
            raise IbisInputError(config, f"the config's model ({type(model).__name__}) is not a SAM2 model (no {attr})")
    return model


def load_checkpoint(model, checkpoint: str | Path) -> None:
    """Load `checkpoint` ({"model": state_dict} or a bare state dict) into `model`, strictly.

    Missing, unexpected and wrongly shaped tensors are refused with their counts and an example.
    """
    import torch

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise IbisInputError(path, "no such checkpoint file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IbisInputError(
            path,
            f"cannot read the checkpoint ({_first_line(exc)}); expected a torch file holding {{'model': state_dict}}",
        ) from None
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise IbisInputError(path, "not a SAM2 checkpoint (expected {'model': state_dict} or a state dict of tensors)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        example = f"; e.g. missing {missing[0]}" if missing else f"; e.g. unexpected {unexpected[0]}"
        raise IbisInputError(
            path,
            f"checkpoint does not match the config: {len(missing)} missing and {len(unexpected)} unexpected keys{example}",
        )
    shapes = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise IbisInputError(
            path,
            f"checkpoint does not match the config: {len(shapes)} tensors have other shapes "
            f"(e.g. {k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model)",
        )
    model.load_state_dict(state, strict=True)


def preprocess(image: np.ndarray, image_size: int):
    """H x W x 3 uint8 -> 1 x 3 x S x S float tensor, S = image_size, as SAM2Transforms does:
    /255, squashed to S x S (bilinear with antialiasing, aspect ratio not kept), ImageNet mean/std."""
    import torch
    import torch.nn.functional as F

    # a copy: images decoded by PIL / the io layer can be read-only, which torch.from_numpy warns about
    x = torch.from_numpy(np.array(image, np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class SAM2Tool(SegmentationTool):
    """A SAM2 / MedSAM2 image model as a click tool.

    config: yaml path or sam2-package config name; checkpoint: the weights (see module docstring).
    prior: feed the previous low-res logits back as mask input (SAM's interactive loop).
    multimask: "never", "first" (3 candidates on a lone first click, without box or prior, the
    best by predicted IoU kept; as SAM2's own `multimask_max_pt_num: 1`), or "always".
    """

    config: str = ""
    checkpoint: str = ""
    prior: bool = True
    multimask: str = "first"
    threads: int | None = None
    alias: str = "sam2"  # the name in `self.name` ("sam2" or "medsam2")
    model: Any = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        require_sam2()
        if not self.config or not self.checkpoint:
            raise IbisInputError(self.alias, "needs a config and a checkpoint: sam2:CONFIG.yaml:CHECKPOINT")
        if self.multimask not in ("never", "first", "always"):
            raise IbisInputError("multimask", f"expected never/first/always, got {self.multimask!r}")
        ckpt = Path(self.checkpoint).expanduser()
        if not ckpt.is_file():  # before the (slow) model build
            raise IbisInputError(ckpt, "no such checkpoint file")
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        self.model = build_model(self.config)
        load_checkpoint(self.model, ckpt)
        self.model.eval()
        self.image_size = int(self.model.image_size)
        # the prompt encoder's mask input size: 4 x the image embedding side
        self.lowres = int(self.model.sam_prompt_encoder.mask_input_size[0])
        self.name = f"{self.alias}[{Path(self.config).name},{ckpt.name}]"

    def _encode(self, image: np.ndarray, key: str) -> Embedding:
        import torch

        from ibisagent.io.images import to_rgb_uint8

        image = to_rgb_uint8(image)  # grayscale / RGBA / 16-bit arrays from API callers
        x = preprocess(image, self.image_size)
        m = self.model
        with torch.inference_mode():
            backbone_out = m.forward_image(x)
            _, vision_feats, _, feat_sizes = m._prepare_backbone_features(backbone_out)
            if m.directly_add_no_mem_embed:
                # what training on videos adds to a frame without memory; the predictor does the same
                vision_feats[-1] = vision_feats[-1] + m.no_mem_embed
            # HW x 1 x C -> 1 x C x h x w; sizes from the model (not the predictor's fixed 256/128/64,
            # which only hold for image_size 1024)
            feats = [f.permute(1, 2, 0).reshape(1, -1, *hw) for f, hw in zip(vision_feats, feat_sizes)]
        features = {"image_embed": feats[-1], "high_res_feats": feats[:-1]}
        return Embedding(
            key=key, features=features, original_size=image.shape[:2], input_size=(self.image_size, self.image_size)
        )

    def mask_to_logits(self, emb: Embedding, mask: np.ndarray):
        """H x W bool mask -> 1 x 1 x L x L logits (+8 inside, -8 outside), squashed like the image."""
        import cv2
        import torch

        small = cv2.resize(np.asarray(mask, np.float32), (self.lowres, self.lowres), interpolation=cv2.INTER_AREA)
        out = np.where(small >= 0.5, PRIOR_LOGIT, -PRIOR_LOGIT).astype(np.float32)
        return torch.from_numpy(out)[None, None]

    def _to_model_xy(self, xy: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """(x, y) pixels of the original image -> (x, y) pixels of the S x S model input."""
        H, W = original_size
        return np.asarray(xy, np.float32) * np.array([self.image_size / W, self.image_size / H], np.float32)

    def _decode(self, emb, points, labels, prev_logits, box) -> ToolResult:
        import torch
        import torch.nn.functional as F

        L = self.lowres
        coords = self._to_model_xy(points, emb.original_size) if len(points) else np.zeros((0, 2), np.float32)
        labs = labels.astype(np.int32)
        if box is not None:
            # the predictor's box: two corners labelled 2 and 3, placed before the clicks
            corners = self._to_model_xy(np.asarray(box, np.float32).reshape(2, 2), emb.original_size)
            coords = np.concatenate([corners, coords])
            labs = np.concatenate([np.array([2, 3], np.int32), labs])
        if len(coords) == 0:
            # Nothing to say where the target is: an empty mask, as an annotator would expect.
            return ToolResult(mask=np.zeros(emb.original_size, bool), logits=torch.full((1, 1, L, L), -20.0), score=0.0)
        mask_in = None
        if self.prior and prev_logits is not None:
            prior = torch.as_tensor(prev_logits, dtype=torch.float32)
            if prior.numel() != L * L:
                raise IbisInputError(
                    "prev_logits", f"expected {L} x {L} low-res logits, got shape {tuple(prior.shape)}"
                )
            mask_in = prior.reshape(1, 1, L, L)
        lone_click = len(points) == 1 and box is None and mask_in is None  # the ambiguous prompt
        multi = self.multimask == "always" or (self.multimask == "first" and lone_click)
        m = self.model
        with torch.inference_mode():
            sparse, dense = m.sam_prompt_encoder(
                points=(torch.from_numpy(coords)[None], torch.from_numpy(labs)[None]), boxes=None, masks=mask_in
            )
            low, iou, _, _ = m.sam_mask_decoder(
                image_embeddings=emb.features["image_embed"],
                image_pe=m.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multi,
                repeat_image=False,
                high_res_features=emb.features["high_res_feats"] if m.use_high_res_features_in_sam else None,
            )
            best = int(iou[0].argmax())
            logits = low[:, best : best + 1].float()
            full = F.interpolate(logits, size=emb.original_size, mode="bilinear", align_corners=False)
        return ToolResult(
            mask=(full[0, 0] > 0).numpy(),
            logits=logits.clamp(-LOGIT_CLAMP, LOGIT_CLAMP),
            score=float(iou[0, best]),
        )

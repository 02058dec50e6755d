"""Image embeddings cached on disk, so training pays for the frozen encoder once per image."""

from __future__ import annotations

import io
from pathlib import Path

from ibisagent.errors import IbisInputError
from ibisagent.io.images import atomic_write_bytes


def cache_path(cache_dir: Path, image_path: Path, mirrored: bool = False) -> Path:
    """The cache file of an image (or of its left-right mirror image), keyed by the file's bytes
    (a copied or re-mounted dataset, whose paths or modification times change, still hits the cache)
    and, for bfloat16 features ($IBISAGENT_ENCODER_PRECISION=bf16), kept apart from fp32 ones."""
    import hashlib

    from ibisagent.tools.onnx_encoder import encoder_precision

    digest = hashlib.sha1(image_path.read_bytes()).hexdigest()[:20]
    bf16 = "-bf16" if encoder_precision() == "bf16" else ""
    return cache_dir / f"{digest}{'-mirrored' if mirrored else ''}{bf16}.pt"


def cached_embeddings(samples, cache_dir: Path) -> dict[Path, Path]:
    """Image path -> cache file for the images of `samples` already embedded in `cache_dir`
    (for benches that read the cache `train tool` / `train compact` filled); others are left out."""
    images = {s.image for s in samples}
    return {p: f for p in images if (f := cache_path(cache_dir, p)).exists()}


def embed_images(
    tool, image_paths: list[Path], cache_dir: Path, progress=None, mirrored: bool = False
) -> dict[Path, Path | str]:
    """Encode each image once (skipping those already cached); returns path -> cache file, or
    path -> error text for an unreadable image (counted, not fatal). `mirrored`: encode each
    image flipped left-right instead (training data for `CompactTrainConfig.mirror`).
    The tool's own encoder does the work (`tool.encode`): OpenVINO or ONNX Runtime with the `fast`
    extra, about twice as fast as torch on 2 cores, and the very encoder the policy meets at run time."""
    import torch

    from ibisagent.io.images import load_image

    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[Path, Path | str] = {}
    for p in image_paths:
        dest = cache_path(cache_dir, p, mirrored)
        if not dest.exists():
            try:
                image = load_image(p)
                image = image[:, ::-1].copy() if mirrored else image
            except IbisInputError as exc:
                out[p] = str(exc)
                if progress:
                    progress()
                continue
            emb = tool.encode(image)
            buf = io.BytesIO()
            record = {
                "features": emb.features[0].half(),
                "input_size": emb.input_size,
                "original_size": image.shape[:2],
            }
            torch.save(record, buf)
            atomic_write_bytes(dest, buf.getvalue())
        out[p] = dest
        if progress:
            progress()
    return out


def load_embedding(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)

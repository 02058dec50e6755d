"""JSONL manifests: one sample a line, masks as files or run-length encoded.

    {"image": "img/a.png", "structure": "liver", "mask": "masks/a_liver.png", "modality": "CT"}
    {"image": "img/a.png", "structure": "spleen", "mask_rle": {"size": [H, W], "counts": [...]}}
    {"image": "img/a.png", "structure": "kidney stone", "negative": true}

Paths are relative to the manifest. `mask_rle` is the format of `ibisagent.io.rle` (row-major
runs starting with background). `negative: true` means the target is absent (empty mask).
A line that cannot be used is skipped with its line number; the other lines still load.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np

from ibisagent.data.pairs import Sample, guess_modality
from ibisagent.data.report import LoadReport
from ibisagent.errors import IbisInputError


def _load_with_array_mask(image_path: Path, mask_fn, what: str) -> tuple[np.ndarray, np.ndarray]:
    from ibisagent.io.images import load_image, mask_from_array

    image = load_image(image_path)
    return image, mask_from_array(mask_fn(image.shape[:2]), what=what, shape=image.shape[:2])


def _rle_mask(rle: dict, _shape: tuple[int, int]) -> np.ndarray:
    from ibisagent.io.rle import rle_decode

    return rle_decode(rle)


def _empty_mask(shape: tuple[int, int]) -> np.ndarray:
    return np.zeros(shape, bool)


def _check_rle(rle: object) -> str | None:
    """Why `rle` is not a usable RLE dict, or None."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        return 'mask_rle must be {"size": [H, W], "counts": [...]}'
    if isinstance(rle["counts"], str):
        return "compressed (string) RLE counts are not supported; give a list of run lengths"
    try:
        h, w = (int(v) for v in rle["size"])
        total = sum(int(c) for c in rle["counts"])
    except (TypeError, ValueError):
        return "mask_rle size/counts must be integers"
    if total != h * w or any(int(c) < 0 for c in rle["counts"]):
        return f"mask_rle counts sum to {total}, expected H*W = {h * w}"
    return None


def load_manifest(path: str | Path) -> LoadReport:
    path = Path(path)
    if not path.is_file():
        raise IbisInputError(path, "no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise IbisInputError(path, "not UTF-8 text (expected JSON lines)") from None
    root, report = path.parent, LoadReport()
    for n, line in enumerate(lines, start=1):
        where = f"{path}:{n}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            report.skip(where, f"not JSON ({exc.msg})")
            continue
        if not isinstance(row, dict) or not row.get("image") or not str(row.get("structure", "")).strip():
            report.skip(where, 'each line needs "image" and "structure"')
            continue
        image = root / row["image"]
        if not image.is_file():
            report.skip(where, f"image file {image} not found")
            continue
        kw = dict(
            structure=str(row["structure"]).strip(),
            modality=str(row.get("modality") or guess_modality(image.name)),
            origin=row.get("origin") or path.stem,
        )
        sid = f"{where} ({image.name} / {kw['structure']})"
        if row.get("negative"):
            loader = partial(_load_with_array_mask, image, _empty_mask, sid)
            report.samples.append(Sample(image, None, frame=f"line{n}", negative=True, loader=loader, **kw))
        elif "mask_rle" in row:
            if why := _check_rle(row["mask_rle"]):
                report.skip(where, why)
                continue
            loader = partial(_load_with_array_mask, image, partial(_rle_mask, row["mask_rle"]), sid)
            report.samples.append(Sample(image, None, frame=f"line{n}", loader=loader, **kw))
        elif row.get("mask"):
            mask = root / row["mask"]
            if not mask.is_file():
                report.skip(where, f"mask file {mask} not found")
                continue
            report.samples.append(Sample(image, mask, **kw))
        else:
            report.skip(where, 'needs "mask", "mask_rle" or "negative": true')
    return report

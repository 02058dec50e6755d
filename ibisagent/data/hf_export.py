"""Export samples (and their queries) to a Hugging Face `datasets` DatasetDict on disk.

Splits by image (`splits.split_by_image`): `train` and `test`. Each row: id, image and mask as
`Image` features (PNG; mask 0/255 grey), structure, modality, origin, negative, and, when
query kinds are given, one row per (sample, query) with query, query_kind, answer,
target_present, perturbation. Written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ibisagent.data.pairs import Sample
from ibisagent.data.queries import Query, build_queries
from ibisagent.data.report import LoadReport
from ibisagent.data.splits import split_by_image
from ibisagent.errors import IbisInputError


def _png(arr: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _features(with_queries: bool):
    from datasets import Features, Image, Value

    cols = {
        "id": Value("string"),
        "image": Image(),
        "mask": Image(),
        "structure": Value("string"),
        "modality": Value("string"),
        "origin": Value("string"),
        "negative": Value("bool"),
    }
    if with_queries:
        cols.update(
            query=Value("string"),
            query_kind=Value("string"),
            answer=Value("string"),
            target_present=Value("bool"),
            perturbation=Value("string"),
        )
    return Features(cols)


def _rows(items: list[tuple[Sample, Query | None]], skipped: LoadReport):
    cache: dict[str, tuple] = {}
    for s, q in items:
        if s.id not in cache:
            try:
                image, mask = s.load()
            except IbisInputError as exc:
                skipped.skip(s.id, str(exc))
                cache[s.id] = ()
                continue
            mask = np.zeros(image.shape[:2], bool) if mask is None else mask
            cache = {s.id: (_png(image), _png(mask.astype(np.uint8) * 255))}
        if not cache[s.id]:
            continue
        image_png, mask_png = cache[s.id]
        row = dict(
            id=s.id,
            image=image_png,
            mask=mask_png,
            structure=s.structure,
            modality=s.modality,
            origin=s.origin,
            negative=s.negative,
        )
        if q is not None:
            row.update(
                query=q.text,
                query_kind=q.kind,
                answer=q.answer,
                target_present=q.target_present,
                perturbation=q.perturbation,
            )
        yield row


def export_hf(
    samples: list[Sample],
    out: str | Path,
    kinds: list[str] | None = None,
    seed: int = 0,
    heldout_percent: int = 15,
    paraphraser=None,
) -> tuple[dict[str, int], LoadReport]:
    """Write a DatasetDict to `out`; returns ({split: rows}, samples skipped while writing)."""
    try:
        from datasets import Dataset, DatasetDict
    except ImportError:
        raise IbisInputError("datasets", "export needs the hf extra: pip install 'ibisagent[hf]'") from None
    out = Path(out)
    train, test = split_by_image(samples, heldout_percent)
    skipped, parts = LoadReport(), {}
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        for name, part in (("train", train), ("test", test)):
            items = build_queries(part, kinds, seed) if kinds else [(s, None) for s in part]
            if kinds and paraphraser is not None:
                from ibisagent.data.queries import paraphrase_queries

                items = paraphrase_queries(items, paraphraser)
            if not items:
                continue
            parts[name] = Dataset.from_generator(
                _rows,
                gen_kwargs={"items": items, "skipped": skipped},
                features=_features(bool(kinds)),
                cache_dir=str(Path(tmp) / "cache"),
            )
        if not parts:
            raise IbisInputError(out, "nothing to export (no samples)")
        staging = Path(tmp) / "dataset"
        DatasetDict(parts).save_to_disk(str(staging))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(staging), str(out))
    return {k: len(v) for k, v in parts.items()}, skipped

"""Folders with a `pairs.csv` (`image,mask,structure[,modality]`, paths relative to the CSV)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError

MODALITY_WORDS = {
    "CT": "CT",
    "MRI": "MRI",
    "MR": "MRI",
    "X-Ray": "X-ray",
    "XRay": "X-ray",
    "X-ray": "X-ray",
    "Ultrasound": "ultrasound",
    "US": "ultrasound",
    "Pathology": "pathology",
    "Fundus": "fundus",
    "Endoscopy": "endoscopy",
    "endoscope": "endoscopy",
    "OCT": "OCT",
    "Dermoscopy": "dermoscopy",
}


@dataclass(frozen=True)
class Sample:
    """One image/target pair. `mask` None means the target's mask is unknown."""

    image: Path
    mask: Path | None
    structure: str
    modality: str = "unknown"
    origin: str = ""

    @property
    def id(self) -> str:
        return (
            f"{self.origin}/{self.image.stem}/{self.structure}"
            if self.origin
            else f"{self.image.stem}/{self.structure}"
        )

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(H x W x 3 uint8 image, H x W bool mask or None)."""
        from ibisagent.io.images import load_image, load_mask

        image = load_image(self.image)
        mask = None if self.mask is None else load_mask(self.mask, shape=image.shape[:2])
        return image, mask


def guess_modality(image_name: str) -> str:
    """Modality from a BiomedParse-style file name (`00_CT_lung.png` -> CT), else "unknown"."""
    for token in Path(image_name).stem.replace("-", "_").split("_"):
        if token in MODALITY_WORDS:
            return MODALITY_WORDS[token]
    low = Path(image_name).stem.lower()
    for token, name in MODALITY_WORDS.items():
        if f"_{token.lower()}_" in f"_{low}_":
            return name
    return "unknown"


def read_pairs_csv(path: str | Path) -> list[Sample]:
    """Samples of a `pairs.csv`. Errors name the file and the line."""
    path = Path(path)
    if path.is_dir():
        path = path / "pairs.csv"
    if not path.exists():
        raise IbisInputError(path, "no such file")
    root = path.parent
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise IbisInputError(path, f"not a readable CSV ({exc})") from None
    if not rows:
        raise IbisInputError(path, "no rows")
    need = {"image", "mask", "structure"}
    if not need <= set(rows[0]):
        raise IbisInputError(path, f"expected columns image,mask,structure[,modality]; got {','.join(rows[0])}")
    samples = []
    for i, row in enumerate(rows, start=2):
        if not row["image"] or not row["structure"]:
            raise IbisInputError(f"{path}:{i}", "empty image or structure")
        modality = (row.get("modality") or "").strip() or guess_modality(row["image"])
        samples.append(
            Sample(
                image=root / row["image"],
                mask=root / row["mask"] if row["mask"] else None,
                structure=row["structure"].strip(),
                modality=modality,
                origin=root.name,
            )
        )
    return samples

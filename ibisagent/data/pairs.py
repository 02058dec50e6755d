"""Folders with a `pairs.csv` (`image,mask,structure[,modality]`, paths relative to the CSV)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
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


Loader = Callable[[], "tuple[np.ndarray, np.ndarray | None]"]


@dataclass(frozen=True)
class Sample:
    """One image/target pair. `mask` None means the target's mask is unknown.

    File-backed by default (`image`, `mask` are paths). Samples cut from volumes or decoded
    from run-length masks carry a `loader` instead, called by `load()`; `image` then names the
    source file (the volume, the manifest image) and `frame` says which part of it (e.g.
    "axial:090"), so ids stay unique. `negative` marks a sample whose target is absent on
    purpose (its mask is empty); an empty mask on a sample not marked negative is a data error.
    """

    image: Path
    mask: Path | None
    structure: str
    modality: str = "unknown"
    origin: str = ""
    frame: str = ""
    negative: bool = False
    loader: Loader | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        stem = f"{self.image.stem}@{self.frame}" if self.frame else self.image.stem
        return f"{self.origin}/{stem}/{self.structure}" if self.origin else f"{stem}/{self.structure}"

    @property
    def image_key(self) -> str:
        """What identifies the underlying image (all slices of a volume share one key)."""
        return f"{self.origin}/{self.image.name}"

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(H x W x 3 uint8 image, H x W bool mask or None). Bad files raise IbisInputError."""
        if self.loader is not None:
            return self.loader()
        from ibisagent.io.images import load_image, load_mask

        image = load_image(self.image)
        if self.negative and self.mask is None:
            return image, np.zeros(image.shape[:2], bool)
        mask = None if self.mask is None else load_mask(self.mask, shape=image.shape[:2])
        return image, mask

    @classmethod
    def from_arrays(
        cls,
        image: np.ndarray,
        mask: np.ndarray | None,
        structure: str,
        modality: str = "unknown",
        origin: str = "",
        name: str = "array",
        frame: str = "",
        negative: bool = False,
    ) -> Sample:
        """A sample over in-memory arrays (image H x W [x 3], any dtype; mask H x W, binary)."""
        from ibisagent.io.images import mask_from_array, to_rgb_uint8

        img = to_rgb_uint8(image, what=name)
        m = None if mask is None else mask_from_array(mask, what=name, shape=img.shape[:2])
        return cls(Path(name), None, structure, modality, origin, frame, negative, loader=lambda: (img, m))


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
    """Samples of a `pairs.csv`. The first bad row raises an error naming the file and the line."""
    samples, problems = parse_pairs_csv(path)
    if problems:
        raise IbisInputError(*problems[0])
    return samples


def parse_pairs_csv(path: str | Path) -> tuple[list[Sample], list[tuple[str, str]]]:
    """(samples, problems) of a `pairs.csv`; a problem is ("FILE:LINE", what is wrong).

    A file that cannot be read at all raises IbisInputError; a bad row is a problem and the
    other rows still load. Files named in a row are not opened here.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "pairs.csv"
    if not path.exists():
        raise IbisInputError(path, "no such file")
    if not path.is_file():
        raise IbisInputError(path, "not a regular file")
    root = path.parent
    try:  # utf-8-sig: a byte-order mark (Excel's CSV export) is not part of the first header
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise IbisInputError(path, f"not a readable CSV ({exc})") from None
    if not rows:
        raise IbisInputError(path, "no rows")
    need = {"image", "mask", "structure"}
    if not need <= set(rows[0]):
        raise IbisInputError(path, f"expected columns image,mask,structure[,modality]; got {','.join(rows[0])}")
    samples, problems = [], []
    for i, row in enumerate(rows, start=2):
        if not (row["image"] or "").strip() or not (row["structure"] or "").strip():
            problems.append((f"{path}:{i}", "empty image or structure"))
            continue
        modality = (row.get("modality") or "").strip() or guess_modality(row["image"])
        mask = (row["mask"] or "").strip()
        samples.append(
            Sample(
                image=root / row["image"].strip(),
                mask=root / mask if mask else None,
                structure=row["structure"].strip(),
                modality=modality,
                origin=root.name,
            )
        )
    return samples, problems


def collect_pairs(paths: list[Path]) -> list[Sample]:
    """Samples from pairs.csv files, folders holding one, or folders searched recursively for them."""
    samples = []
    for p in map(Path, paths):
        if p.is_file() or (p / "pairs.csv").exists():
            samples += read_pairs_csv(p)
        elif p.is_dir():
            found = sorted(p.rglob("pairs.csv"))
            if not found:
                raise IbisInputError(p, "no pairs.csv in this folder or below")
            for f in found:
                samples += read_pairs_csv(f)
        else:
            raise IbisInputError(p, "no such file or folder")
    return samples

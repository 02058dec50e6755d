"""BiomedParse-style folders: `<split>/<image>_<modality>_<site>.png` with per-target masks
`<split>_mask/<image>_<modality>_<site>_<target>.png` (target words joined by `+`).

This is the on-disk layout of BiomedParseData (the reference system's training data): each
dataset has `train/`, `train_mask/`, `test/`, `test_mask/`, sometimes below a modality or task
folder. Mask pixels != 0 are the target.
"""

from __future__ import annotations

from pathlib import Path

from ibisagent.data.pairs import MODALITY_WORDS, Sample
from ibisagent.data.report import LoadReport

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def split_dirs(root: Path) -> list[tuple[Path, Path]]:
    """(image folder, mask folder) pairs under `root` (any depth): `X/` beside `X_mask/`."""
    found = []
    for mask_dir in sorted(p for p in [root, *root.rglob("*")] if p.is_dir() and p.name.endswith("_mask")):
        image_dir = mask_dir.with_name(mask_dir.name[: -len("_mask")])
        if image_dir.is_dir():
            found.append((image_dir, mask_dir))
    return found


def is_biomedparse_folder(root: Path) -> bool:
    return root.is_dir() and bool(split_dirs(root))


def parse_image_name(stem: str) -> tuple[str, str]:
    """(modality, site) of `<image>_<modality>_<site>`; modality normalised where known."""
    parts = stem.split("_")
    if len(parts) < 3:
        return "unknown", ""
    return MODALITY_WORDS.get(parts[-2], parts[-2]), parts[-1]


def target_name(token: str) -> str:
    """`left+kidney` -> `left kidney`."""
    return " ".join(token.replace("+", " ").split())


def load_biomedparse(root: str | Path) -> LoadReport:
    """Samples of every split folder under `root`; unmatched masks and mask-less images are
    reported as skipped."""
    root = Path(root)
    report = LoadReport()
    for image_dir, mask_dir in split_dirs(root):
        rel = image_dir.parent.relative_to(root).as_posix()
        origin = f"{root.name}/{rel}/{image_dir.name}" if rel != "." else f"{root.name}/{image_dir.name}"
        images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        used = set()
        for mask in sorted(p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            stem, target, image = mask.stem, None, None
            cut = len(stem)
            while (cut := stem.rfind("_", 0, cut)) > 0:
                if stem[:cut] in images:
                    image, target = images[stem[:cut]], target_name(stem[cut + 1 :])
                    break
            if image is None or not target:
                report.skip(mask, f"no image in {image_dir.name}/ whose name is a prefix of this mask's name")
                continue
            used.add(image.stem)
            modality, _site = parse_image_name(image.stem)
            report.samples.append(Sample(image, mask, target, modality, origin))
        for stem, image in images.items():
            if stem not in used:
                report.skip(image, f"no mask in {mask_dir.name}/ for this image")
    return report

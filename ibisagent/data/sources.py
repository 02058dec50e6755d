"""One entry point for every dataset kind: `open_dataset(PATH)` -> LoadReport.

PATH may be:
- a folder with `pairs.csv` (or the CSV itself): `image,mask,structure[,modality]`;
- a BiomedParse-style folder (`train/` beside `train_mask/`, at any depth);
- a `.jsonl` manifest;
- a NIfTI volume or a DICOM series folder, with `labels` (label map files and value->name maps);
- `nilearn:mni152`: the MNI152 T1 template with brain / gray / white matter masks;
- a folder of any of these (searched a few levels deep), e.g. a folder of pairs.csv folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ibisagent.data.biomedparse import is_biomedparse_folder, load_biomedparse
from ibisagent.data.report import LoadReport
from ibisagent.errors import IbisInputError

MAX_DEPTH = 3


class NothingToRead(IbisInputError):
    """A folder with no dataset in it (while searching a tree, such folders are passed over)."""


@dataclass
class VolumeOptions:
    """How volumes become 2D samples (see `volumes.volume_samples`)."""

    labels: list[tuple[object, dict[int, str]]] = field(default_factory=list)
    axis: str = "axial"
    window: str = "auto"
    negatives: bool = False
    step: int = 1
    modality: str | None = None
    series_uid: str | None = None


def load_pairs(path: Path) -> LoadReport:
    """A pairs.csv: bad rows and rows naming files that do not exist are skipped and reported."""
    from ibisagent.data.pairs import parse_pairs_csv

    samples, problems = parse_pairs_csv(path)
    report = LoadReport()
    for where, why in problems:
        report.skip(where, why)
    for s in samples:
        missing = [str(p) for p in (s.image, s.mask) if p is not None and not p.is_file()]
        if missing:
            report.skip(s.id, f"file not found: {', '.join(missing)}")
        else:
            report.samples.append(s)
    return report


def _is_dicom_folder(path: Path) -> bool:
    for f in list(path.iterdir())[:20]:
        if f.is_file():
            if f.suffix.lower() == ".dcm":
                return True
            try:
                with f.open("rb") as fh:
                    fh.seek(128)
                    if fh.read(4) == b"DICM":
                        return True
            except OSError:
                continue
    return False


def open_dataset(spec: str | Path, volume: VolumeOptions | None = None, _depth: int = 0) -> LoadReport:
    """Samples of `spec` (see the module doc). Unreadable parts are skipped and reported;
    a PATH that is nothing this can read raises IbisInputError."""
    from ibisagent.data.volume_io import is_volume_path
    from ibisagent.data.volumes import MNI152_NAME, mni152_samples

    volume = volume or VolumeOptions()
    if str(spec) == MNI152_NAME:
        return mni152_samples(axis=volume.axis, negatives=volume.negatives, step=volume.step)
    path = Path(spec)
    if not path.exists():
        raise IbisInputError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return load_pairs(path)
        if path.suffix.lower() == ".jsonl":
            from ibisagent.data.manifest import load_manifest

            return load_manifest(path)
        if is_volume_path(path):
            return _volume(path, volume)
        raise IbisInputError(path, "expected a pairs.csv, a .jsonl manifest, a NIfTI volume or a folder")
    if (path / "pairs.csv").is_file():
        return load_pairs(path / "pairs.csv")
    if is_biomedparse_folder(path):
        return load_biomedparse(path)
    if _is_dicom_folder(path):
        return _volume(path, volume)
    report, found = LoadReport(), False
    if _depth < MAX_DEPTH:
        for child in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            if not (child.is_dir() or child.suffix.lower() == ".jsonl"):
                continue
            try:
                report.extend(open_dataset(child, volume, _depth + 1))
                found = True
            except NothingToRead:
                continue
            except IbisInputError as exc:  # a broken dataset among good ones: report it, go on
                report.skip(exc.what, exc.problem)
                found = True
    if not found:
        raise NothingToRead(path, "nothing this can read here (no pairs.csv, BiomedParse folders, .jsonl, volumes)")
    return report


def _volume(path: Path, opts: VolumeOptions) -> LoadReport:
    from ibisagent.data.scans import load_volume
    from ibisagent.data.volumes import volume_samples

    if not opts.labels:
        raise IbisInputError(path, "a volume needs label maps to make samples: --labels FILE --names 1=liver,...")
    vol = load_volume(path, modality=opts.modality or "unknown", series_uid=opts.series_uid)
    return volume_samples(vol, opts.labels, opts.axis, opts.window, opts.negatives, opts.step, modality=opts.modality)

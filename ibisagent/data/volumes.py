"""Samples from 3D volumes: one 2D slice per (label, slice index), windowed to 8-bit.

A label map is an integer volume on the image's voxel grid plus a label-value -> name map
(`{1: "liver", 2: "left kidney"}`); several binary masks (MNI152's brain / gray / white matter)
are several label maps with `{1: name}`. Slices where a label is absent become negative samples
(empty mask, `negative=True`) only when `negatives=True`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ibisagent.data.pairs import Sample
from ibisagent.data.report import LoadReport
from ibisagent.data.scans import load_label_map, load_volume
from ibisagent.data.volume_io import Volume, axis_index, display, plane_index
from ibisagent.data.windowing import to_uint8
from ibisagent.errors import IbisInputError

LabelSpec = tuple[object, dict[int, str]]  # (label map file or nibabel image, value -> name)


def parse_label_names(text: str | Path) -> dict[int, str]:
    """`1=liver,2=left kidney`, or a JSON file `{"1": "liver"}`, or a text file of `1 liver` lines."""
    p = Path(str(text))
    if p.suffix.lower() in (".json", ".txt") and p.is_file():
        raw = p.read_text(encoding="utf-8")
        if p.suffix.lower() == ".json":
            try:
                items = json.loads(raw).items()
            except (json.JSONDecodeError, AttributeError):
                raise IbisInputError(p, 'expected a JSON object {"1": "liver", ...}') from None
        else:
            items = [ln.split(None, 1) for ln in raw.splitlines() if ln.strip() and not ln.startswith("#")]
    else:
        items = [part.split("=", 1) for part in str(text).split(",") if part.strip()]
    names = {}
    for item in items:
        try:
            value, name = item
            names[int(value)] = str(name).strip().strip('"')
        except (ValueError, TypeError):
            raise IbisInputError(text, "label names are VALUE=NAME pairs, e.g. 1=liver,2=left kidney") from None
    if not names or any(not n for n in names.values()) or 0 in names:
        raise IbisInputError(text, "need at least one VALUE=NAME with a non-zero value and a name")
    return names


@dataclass
class VolumeSlicer:
    """Cuts display-oriented 2D slices of a volume and its label maps, one window for all."""

    volume: Volume
    labels: list[np.ndarray]
    low: float
    high: float

    def image(self, axis: int, k: int) -> np.ndarray:
        """H x W x 3 uint8 (grey repeated) of slice k."""
        g = to_uint8(self.volume.intensity(axis, k), self.low, self.high)
        return np.repeat(g[..., None], 3, axis=2)

    def mask(self, label_index: int, value: int, axis: int, k: int) -> np.ndarray:
        return display(self.labels[label_index][plane_index(axis, k)]) == value


def _load_slice(slicer: VolumeSlicer, axis: int, k: int, label_index: int, value: int) -> tuple:
    return slicer.image(axis, k), np.ascontiguousarray(slicer.mask(label_index, value, axis, k))


def volume_samples(
    volume,
    label_maps: list[LabelSpec],
    axis: str = "axial",
    window: str = "auto",
    negatives: bool = False,
    step: int = 1,
    min_pixels: int = 1,
    modality: str | None = None,
    origin: str | None = None,
) -> LoadReport:
    """Slice samples of `volume` (path, DICOM folder, nibabel image or Volume) for every named
    label value. Positive slices have >= `min_pixels` target pixels; with `negatives` the slices
    where a label is absent come as negatives. Every `step`-th slice is considered."""
    report = LoadReport()
    vol = volume if isinstance(volume, Volume) else load_volume(volume, modality=modality or "unknown")
    if modality:
        vol.modality = modality
    a = axis_index(axis)
    labels, specs = [], []
    for source, names in label_maps:
        try:
            labels.append(load_label_map(source, vol))
            specs.append(names)
        except IbisInputError as exc:
            report.skip(getattr(source, "get_filename", lambda: None)() or source, exc.problem)
    low, high = vol.window_range(window)
    slicer = VolumeSlicer(vol, labels, low, high)
    src = Path(vol.source)
    origin = origin if origin is not None else src.parent.name
    other = tuple(i for i in range(3) if i != a)
    for li, (lab, names) in enumerate(zip(labels, specs)):
        for value, name in sorted(names.items()):
            per_slice = np.count_nonzero(lab == value, axis=other)
            if not per_slice.any():
                report.skip(f"{src.name} label {value} ({name})", "value does not occur in the label map")
                continue
            for k in range(0, vol.data.shape[a], step):
                positive = per_slice[k] >= min_pixels
                if not positive and not negatives:
                    continue
                report.samples.append(
                    Sample(
                        src,
                        None,
                        name,
                        vol.modality,
                        origin,
                        frame=f"{'sagittal coronal axial'.split()[a]}:{k:03d}",
                        negative=not positive,
                        loader=partial(_load_slice, slicer, a, k, li, value),
                    )
                )
    return report


MNI152_NAME = "nilearn:mni152"


def mni152_samples(axis: str = "axial", negatives: bool = False, step: int = 1) -> LoadReport:
    """The nilearn MNI152 2009 T1 template with its brain / gray matter / white matter masks."""
    try:
        from nilearn import datasets
    except ImportError:
        raise IbisInputError(MNI152_NAME, "needs nilearn: pip install 'ibisagent[volumes]'") from None
    t1 = datasets.load_mni152_template()
    vol = load_volume(t1, modality="MRI")
    vol.source = "mni152_2009_t1.nii.gz"
    maps = [
        (datasets.load_mni152_brain_mask(), {1: "brain"}),
        (datasets.load_mni152_gm_mask(), {1: "gray matter"}),
        (datasets.load_mni152_wm_mask(), {1: "white matter"}),
    ]
    return volume_samples(vol, maps, axis=axis, window="percentile", negatives=negatives, step=step, origin="mni152")

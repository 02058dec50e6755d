"""Benchmark: slice a 256 x 256 x 180 volume and write the mask back (NIfTI), time and memory.

The volume is the nilearn MNI152 T1 template (real data) placed in a 256 x 256 x 180 int16 grid
with a scale factor, stored LPS (so reorientation is exercised). The per-slice segmenter is a
threshold (no model), so the figure is the data layer's own cost: window + slice + write back.
Peak memory is numpy's traced allocations (tracemalloc) during the run, plus the process RSS.

    python bench/bench_volume.py            # prints seconds and peak MiB
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def make_volume(path: Path) -> tuple[int, ...]:
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
    from nilearn import datasets

    t1 = datasets.load_mni152_template()
    src = np.asarray(t1.dataobj, np.float32)
    grid = np.zeros((256, 256, 180), np.int16)
    x, y, z = (min(a, b) for a, b in zip(src.shape, grid.shape))
    grid[:x, :y, :z] = (src[:x, :y, :z] * 10).astype(np.int16)
    img = nib.Nifti1Image(grid, t1.affine)
    img.header.set_slope_inter(0.1, 0.0)
    lps = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(("L", "P", "S"))))
    nib.save(lps, path)
    return lps.shape


def main() -> None:
    from ibisagent.data.scans import load_volume
    from ibisagent.data.segment_volume import segment_volume

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "vol.nii.gz", Path(tmp) / "mask.nii.gz"
        shape = make_volume(src)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        t0 = time.perf_counter()
        vol = load_volume(src)
        t_load = time.perf_counter() - t0
        res = segment_volume(vol, lambda im: im[..., 0] > 100, out, axis="axial", window="percentile")
        total = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        volume_mib = np.prod(shape) * 2 / 2**20
        print(f"volume {shape} int16 ({volume_mib:.1f} MiB stored), {len(res.slices)} axial slices")
        print(f"load {t_load:.2f} s, slice+segment+write {res.seconds:.2f} s, total {total:.2f} s")
        print(f"peak traced allocations {peak / 2**20:.1f} MiB (float64 copy would be {volume_mib * 4:.0f} MiB)")
        print(
            f"process max RSS {rss1:.0f} MiB (before the run {rss0:.0f} MiB); mask file {out.stat().st_size / 1024:.0f} KiB"
        )


if __name__ == "__main__":
    sys.exit(main())

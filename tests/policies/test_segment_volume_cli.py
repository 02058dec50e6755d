"""`ibisagent segment VOLUME.nii.gz`: slice by slice, a NIfTI mask with the input's affine."""

import numpy as np
import pytest
from typer.testing import CliRunner

from ibisagent.cli.main import app

nib = pytest.importorskip("nibabel")
datasets = pytest.importorskip("nilearn.datasets")


def test_volume_is_segmented_slice_by_slice(tmp_path):
    src = datasets.load_mni152_template(resolution=2)
    path = tmp_path / "mni.nii.gz"
    nib.save(src, path)
    r = CliRunner().invoke(
        app,
        [
            "segment",
            str(path),
            "-q",
            "Segment the brain.",
            "--policy",
            "centre",
            "--slices",
            "40:42",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert r.exit_code == 0, r.output
    out = nib.load(tmp_path / "o" / "mask.nii.gz")
    assert np.allclose(out.affine, src.affine) and out.shape == src.shape
    data = np.asarray(out.dataobj)
    assert data.any(), "the centre click segmented something"
    z = np.nonzero(data.any(axis=(0, 1)))[0]
    assert set(z) <= {40, 41}


def test_volume_needs_a_policy(tmp_path):
    src = datasets.load_mni152_template(resolution=2)
    nib.save(src, tmp_path / "v.nii.gz")
    r = CliRunner().invoke(app, ["segment", str(tmp_path / "v.nii.gz"), "-q", "Segment the brain."])
    assert r.exit_code == 2 and "choose a policy" in r.output

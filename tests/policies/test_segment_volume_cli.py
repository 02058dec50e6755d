"""`ibisagent segment VOLUME.nii.gz`: slice by slice, a NIfTI mask with the input's affine."""

import numpy as np
import pytest
from typer.testing import CliRunner

from ibisagent.cli.main import app
from tests.data.dicom_series import write_series

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


def test_nifti_dicom_file_and_series_take_the_default_policy(tmp_path, monkeypatch):
    """NIfTI, one DICOM file and a DICOM series folder all go through the volume path with the
    default (compact) policy; the mask comes back as NIfTI with the input's geometry, under
    runs/segment/ when no --out is given (never beside the input)."""
    pytest.importorskip("pydicom")
    from ibisagent.data.scans import load_volume

    src = datasets.load_mni152_template(resolution=2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(src, inputs / "mni.nii.gz")
    write_series(np.asarray(src.dataobj)[:, :, 44:47].astype(np.int16) * 4, inputs / "series", first_suffix="")
    monkeypatch.chdir(tmp_path)
    cases = [
        (inputs / "mni.nii.gz", ["--slices", "45"], tmp_path / "runs" / "segment" / "mni"),
        (inputs / "series", ["--slices", "1"], tmp_path / "runs" / "segment" / "series"),
        (inputs / "series" / "s000", [], tmp_path / "runs" / "segment" / "s000"),
    ]
    for path, extra, out in cases:
        r = CliRunner().invoke(app, ["segment", str(path), "-q", "Segment the brain.", *extra])
        assert r.exit_code == 0, (path, r.output)
        assert "with compact" in r.output
        vol = load_volume(path)
        mask = nib.load(out / "mask.nii.gz")
        assert mask.shape == vol.native_shape and np.allclose(mask.affine, vol.affine), path
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert sorted(p.name for p in inputs.iterdir()) == ["mni.nii.gz", "series"]
    assert len(list((inputs / "series").iterdir())) == 3

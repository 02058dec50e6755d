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


def write_dicom_series(data: np.ndarray, folder) -> None:
    """Axial CT slices of a RAS volume (1 mm, origin like MNI152) as one DICOM series."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    X, Y, _ = data.shape
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = FileDataset(str(folder / f"s{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = "1.2.3.4", "1.2.3", k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [98 - (X - 1), 134 - (Y - 1), -72 + k]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = Y, X, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.ascontiguousarray(data[::-1, ::-1, k].T.astype(np.int16)).tobytes()
        # no .dcm suffix on the first file: a DICOM file is recognised by its content too
        name = "s000" if k == 0 else f"s{k:03d}.dcm"
        ds.save_as(str(folder / name), enforce_file_format=True)


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
    write_dicom_series(np.asarray(src.dataobj)[:, :, 44:47].astype(np.int16) * 4, inputs / "series")
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

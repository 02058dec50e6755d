from __future__ import annotations

import numpy as np
import pytest

from ibisagent.data.scans import load_volume
from ibisagent.errors import IbisInputError

pydicom = pytest.importorskip("pydicom")


def write_series(data: np.ndarray, folder, uid="1.2.3.4", first_k=0):
    """Axial slices of a RAS volume (1 mm, origin -98,-134,-72 like MNI152) as CT DICOM files.
    pixel[r, c] = data[X-1-c, Y-1-r, k]: rows go posterior (LPS +y), columns patient left (+x)."""
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
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = uid, "1.2.3", k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [98 - (X - 1), 134 - (Y - 1), -72 + first_k + k]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = Y, X, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.ascontiguousarray(data[::-1, ::-1, k].T.astype(np.int16)).tobytes()
        ds.save_as(str(folder / f"s{k:03d}.dcm"), enforce_file_format=True)


@pytest.fixture(scope="module")
def mni_part(mni):
    return np.asarray(mni[0].dataobj)[:, :, 80:96].astype(np.int16) * 4


def test_series_reads_back_in_place(mni_part, tmp_path):
    write_series(mni_part, tmp_path / "ct", first_k=80)
    vol = load_volume(tmp_path / "ct")
    assert vol.modality == "CT" and vol.inter == -1024
    assert (vol.data == mni_part).all()  # canonical RAS voxels equal the RAS source
    # the canonical first voxel sits at MNI world (-98, -134, -72 + 80)
    from nibabel.orientations import inv_ornt_aff

    canon_affine = vol.affine @ inv_ornt_aff(vol.ornt, vol.native_shape)
    assert np.allclose(canon_affine @ [0, 0, 0, 1], [-98, -134, 8, 1])
    hu = vol.intensity("axial", 5)
    assert np.allclose(hu, mni_part[:, :, 5].T[::-1, ::-1] - 1024.0)


def test_missing_slice_is_named(mni_part, tmp_path):
    write_series(mni_part, tmp_path / "ct")
    (tmp_path / "ct" / "s007.dcm").unlink()
    with pytest.raises(IbisInputError, match="missing slices: about 1 between s006.dcm and s008.dcm"):
        load_volume(tmp_path / "ct")


def test_mixed_series_are_refused_unless_one_is_picked(mni_part, tmp_path):
    write_series(mni_part[:, :, :4], tmp_path / "mix", uid="1.1")
    write_series(mni_part[:, :, :3], tmp_path / "other", uid="2.2")
    for f in (tmp_path / "other").iterdir():
        f.rename(tmp_path / "mix" / f"b_{f.name}")
    with pytest.raises(IbisInputError, match="2 series mixed in one folder"):
        load_volume(tmp_path / "mix")
    assert load_volume(tmp_path / "mix", series_uid="2.2").data.shape[2] == 3

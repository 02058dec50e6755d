from __future__ import annotations

import numpy as np
import pytest

from ibisagent.data.scans import load_volume
from ibisagent.errors import IbisInputError
from tests.data.dicom_series import write_series

pydicom = pytest.importorskip("pydicom")


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

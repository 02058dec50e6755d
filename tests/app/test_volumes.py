"""Volumes in the REST API: a real NIfTI (nilearn's MNI152 T1 template) -> slice -> click -> the
slice's mask back as NIfTI on the input's grid and affine."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from ibisagent.data.volume_io import from_display
from ibisagent.io.rle import rle_decode, rle_encode

nib = pytest.importorskip("nibabel", reason="the volumes extra is not installed")


@pytest.fixture(scope="module")
def mni_bytes() -> bytes:
    datasets = pytest.importorskip("nilearn.datasets", reason="nilearn (the MNI152 template) is not installed")
    img = datasets.load_mni152_template()
    return gzip.compress(img.to_bytes(), compresslevel=1)


@pytest.fixture(scope="module")
def volume(client, mni_bytes) -> dict:
    r = client.post("/v1/volumes", files={"volume": ("mni.nii.gz", mni_bytes, "application/gzip")})
    assert r.status_code == 200, r.text
    return r.json()


def test_volume_slice_click_and_nifti_mask(client, volume, mni_bytes):
    from nilearn import datasets

    t1 = datasets.load_mni152_template()
    assert volume["shape"] == list(t1.shape) and volume["slices"]["axial"] == t1.shape[2]
    assert {"auto", "percentile", "abdomen"} <= set(volume["windows"])
    r = client.post(f"/v1/volumes/{volume['volume_id']}/slice", json={"axis": "axial", "index": 90})
    assert r.status_code == 200, r.text
    sl = r.json()
    assert (sl["index"], sl["width"], sl["height"]) == (90, t1.shape[0], t1.shape[1])  # display: rows = y
    out = client.post("/v1/tool/segment", json={"image_id": sl["image_id"], "points": [[0.5, 0.5]], "labels": [1]})
    assert out.status_code == 200, out.text
    assert rle_decode(out.json()["mask"]["rle"]).shape == (sl["height"], sl["width"])
    # a known mask (a rectangle in the top-left of the displayed slice) goes back onto the voxel grid
    mask2d = np.zeros((sl["height"], sl["width"]), bool)
    mask2d[10:40, 20:70] = True
    r = client.post(
        f"/v1/volumes/{volume['volume_id']}/mask", json={"axis": "axial", "index": 90, "mask": rle_encode(mask2d)}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    m = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    vox = np.asarray(m.dataobj)
    assert m.shape == t1.shape and np.allclose(m.affine, t1.affine)
    assert int(vox.sum()) == int(mask2d.sum()) == int(vox[:, :, 90].sum())
    assert np.array_equal(vox[:, :, 90].astype(bool), from_display(mask2d))
    # MNI152 is stored RAS: the display's top-left (anterior, patient right) holds the high x, high y voxels
    W, H = t1.shape[:2]
    assert vox[W - 70 : W - 20, H - 40 : H - 10, 90].all()


def test_volume_errors(client, volume, demo_dir):
    vid = volume["volume_id"]
    bad = client.post(
        "/v1/volumes", files={"volume": ("x.png", (demo_dir / "images" / "08_MRI_heart.png").read_bytes())}
    )
    assert bad.status_code == 415 and "nifti" in bad.json()["error"].lower()
    corrupt = client.post("/v1/volumes", files={"volume": ("x.nii.gz", b"\x1f\x8b\x08\x00garbage", "application/gzip")})
    assert corrupt.status_code == 400, corrupt.text
    buf = io.BytesIO(b"\0" * 400)
    assert client.post("/v1/volumes", files={"volume": ("x.nii", buf.getvalue())}).status_code == 415
    assert client.post("/v1/volumes/" + "0" * 32 + "/slice", json={}).status_code == 404
    r = client.post(f"/v1/volumes/{vid}/slice", json={"axis": "axial", "index": 10_000})
    assert r.status_code == 400 and "outside" in r.json()["error"]
    r = client.post(f"/v1/volumes/{vid}/slice", json={"window": "disco"})
    assert r.status_code == 400 and "window" in r.json()["error"]
    r = client.post(f"/v1/volumes/{vid}/mask", json={"axis": "axial", "mask": {"size": [3, 3], "counts": [9]}})
    assert r.status_code == 400 and "mask is 3 x 3" in r.json()["error"]


def test_truncated_nifti_is_a_clear_400(client, mni_bytes):
    r = client.post(
        "/v1/volumes", files={"volume": ("cut.nii.gz", mni_bytes[: len(mni_bytes) // 2], "application/gzip")}
    )
    assert r.status_code == 400 and "cut.nii.gz" in r.json()["error"], r.text


def test_a_single_real_dicom_file(client):
    """pydicom's own CT test file (128 x 128, int16, rescale intercept -1024, a TIFF-looking
    preamble before DICM): upload, the windowed slice is the file's Hounsfield units, a click
    segments it, and the mask comes back as NIfTI on the file's grid and patient position."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    data = open(path, "rb").read()
    assert data[:4] == b"II*\x00" and data[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    r = client.post("/v1/volumes", files={"volume": ("CT_small.dcm", data, "application/dicom")})
    assert r.status_code == 200, r.text
    vol = r.json()
    assert vol["modality"] == "CT" and vol["shape"] == [128, 128, 1] and vol["slices"]["axial"] == 1
    r = client.post(f"/v1/volumes/{vol['volume_id']}/slice", json={"axis": "axial", "index": 0, "window": "abdomen"})
    assert r.status_code == 200, r.text
    sl = r.json()
    assert (sl["width"], sl["height"], sl["window"]) == (128, 128, "abdomen")
    # the slice is the file's pixels in Hounsfield units through the abdomen window (W 400, L 40),
    # rows and columns as stored (DICOM rows run anterior -> posterior, columns right -> left)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    want = np.clip((hu - (40 - 200)) / 400 * 255, 0, 255)
    got = client.app.state.service.images.get(sl["image_id"]).image
    assert got.shape == (128, 128, 3) and np.abs(got[..., 0].astype(float) - want).max() <= 1.0
    out = client.post("/v1/tool/segment", json={"image_id": sl["image_id"], "points": [[0.5, 0.5]], "labels": [1]})
    assert out.status_code == 200, out.text
    mask2d = rle_decode(out.json()["mask"]["rle"])
    assert mask2d.shape == (128, 128) and mask2d.any()
    r = client.post(
        f"/v1/volumes/{vol['volume_id']}/mask", json={"axis": "axial", "index": 0, "mask": rle_encode(mask2d)}
    )
    assert r.status_code == 200, r.text
    m = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    assert m.shape == (128, 128, 1) and int(np.asarray(m.dataobj).sum()) == int(mask2d.sum())
    # the NIfTI affine (RAS) carries the file's pixel spacing and position (LPS: x, y negated)
    spacing = float(ds.PixelSpacing[0])
    assert np.allclose(np.linalg.norm(m.affine[:3, :2], axis=0), spacing, atol=1e-4)
    lps = np.array([float(v) for v in ds.ImagePositionPatient])
    voxel_centres = [m.affine @ np.array([i, j, 0, 1.0]) for i in (0, 127) for j in (0, 127)]
    assert any(np.allclose(c[:3], [-lps[0], -lps[1], lps[2]], atol=1e-3) for c in voxel_centres), m.affine

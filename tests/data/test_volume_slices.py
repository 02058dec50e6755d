from __future__ import annotations

import numpy as np
import pytest

from ibisagent.data.scans import load_volume
from ibisagent.data.segment_volume import parse_slice_range, segment_volume
from ibisagent.data.volumes import mni152_samples, parse_label_names, volume_samples
from ibisagent.data.windowing import ct_window, to_uint8
from ibisagent.errors import IbisInputError

nib = pytest.importorskip("nibabel")


def test_windows():
    assert ct_window("abdomen") == (-160.0, 240.0)
    assert ct_window("lung") == (-1350.0, 150.0)
    hu = np.array([[-2000, -160, 40, 240, 3000]], np.float32)
    assert to_uint8(hu, *ct_window("abdomen")).tolist() == [[0, 0, 128, 255, 255]]
    with pytest.raises(IbisInputError, match="unknown CT window"):
        ct_window("spine")


def test_mni152_samples_and_orientation(shared_data):
    report = mni152_samples(step=10)
    assert {s.structure for s in report.samples} == {"brain", "gray matter", "white matter"}
    assert not any(s.negative for s in report.samples) and not report.skipped
    neg = mni152_samples(step=10, negatives=True)
    assert any(s.negative for s in neg.samples) and len(neg.samples) > len(report.samples)
    s = next(x for x in report.samples if x.frame == "axial:080" and x.structure == "brain")
    image, mask = s.load()
    assert image.shape == (233, 197, 3) and mask.shape == (233, 197) and mask.any()
    shared = shared_data / "mni152_t1_slices" / "images" / "mni152_2009a_axial_z080.png"
    if shared.exists():  # the development set's slice (anterior at the top) agrees with ours
        from PIL import Image

        ref = np.asarray(Image.open(shared), np.float64)
        assert np.corrcoef(ref.ravel(), image[..., 0].ravel().astype(float))[0, 1] > 0.99


@pytest.mark.parametrize("codes", ["RAS", "LPS", "PIR"])
def test_display_orientation_whatever_the_storage(codes):
    """One marker voxel at the patient's left, anterior, superior (RAS index (1, 9, 11) of
    9 x 11 x 13), stored in any axis order: axial shows it top (anterior) right (patient left,
    radiological), coronal top right, sagittal top left (superior, anterior on the left)."""
    from nibabel.orientations import axcodes2ornt, ornt_transform

    data = np.zeros((9, 11, 13), np.int16)
    data[1, 9, 11] = 100
    ras = nib.Nifti1Image(data, np.eye(4))
    vol = load_volume(ras.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes))))
    for axis, k, where in (("axial", 11, (1, 7)), ("coronal", 9, (1, 7)), ("sagittal", 1, (1, 1))):
        plane = vol.plane(axis, k)
        assert np.unravel_index(np.argmax(plane), plane.shape) == where, axis


def test_label_names_and_volume_from_files(mni_files, tmp_path):
    t1, brain = mni_files
    assert parse_label_names("1=liver, 2=left kidney") == {1: "liver", 2: "left kidney"}
    (tmp_path / "names.json").write_text('{"1": "brain"}')
    assert parse_label_names(tmp_path / "names.json") == {1: "brain"}
    with pytest.raises(IbisInputError):
        parse_label_names("liver")
    report = volume_samples(t1, [(brain, {1: "brain", 7: "nothing"})], axis="coronal", step=20, window="percentile")
    assert report.samples and all(s.frame.startswith("coronal:") for s in report.samples)
    assert any("label 7" in s.what for s in report.skipped)


def test_nifti_without_affine_is_refused(mni, tmp_path):
    t1, _ = mni
    img = nib.Nifti1Image(np.asarray(t1.dataobj)[:, :, :20], None)
    img.header["sform_code"], img.header["qform_code"] = 0, 0
    nib.save(img, tmp_path / "noaff.nii.gz")
    with pytest.raises(IbisInputError, match="no affine"):
        load_volume(tmp_path / "noaff.nii.gz")
    assert load_volume(tmp_path / "noaff.nii.gz", allow_no_affine=True).data.shape == (197, 233, 20)


def test_segment_volume_writes_back_over_a_reoriented_input(mni, tmp_path):
    """LPI-stored input: the written mask has its affine/header and matches voxel for voxel."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    t1, _ = mni
    lpi = t1.as_reoriented(ornt_transform(io_orientation(t1.affine), axcodes2ornt(("L", "P", "I"))))
    nib.save(lpi, tmp_path / "lpi.nii.gz")
    vol = load_volume(tmp_path / "lpi.nii.gz")
    low, high = vol.window_range("auto")
    res = segment_volume(vol, lambda im: im[..., 0] > 60, tmp_path / "mask.nii.gz", slices="20:170")
    out = nib.load(tmp_path / "mask.nii.gz")
    assert np.allclose(out.affine, lpi.affine) and nib.aff2axcodes(out.affine) == ("L", "P", "I")
    assert out.get_data_dtype() == np.uint8 and int(out.header["sform_code"]) == int(lpi.header["sform_code"])
    expect = to_uint8(np.asarray(lpi.dataobj, np.float32), low, high) > 60
    expect[:, :, 189 - 20 :] = False  # stored z is flipped (I): canonical 20..169 -> stored 19..168
    expect[:, :, : 189 - 170] = False
    got = np.asarray(out.dataobj).astype(bool)
    assert (got == expect).all() and res.voxels == int(expect.sum()) and len(res.slices) == 150


def test_slice_ranges():
    assert parse_slice_range(None, 5) == [0, 1, 2, 3, 4]
    assert parse_slice_range("1:4", 5) == [1, 2, 3]
    assert parse_slice_range("0:5:2", 5) == [0, 2, 4]
    for bad in ("9", "a:b", "7:9"):
        with pytest.raises(IbisInputError):
            parse_slice_range(bad, 5)


def test_segment_volume_rejects_bad_segmenter(mni_files, tmp_path):
    with pytest.raises(IbisInputError, match="segmenter returned shape"):
        segment_volume(mni_files[0], lambda im: np.zeros((3, 3), bool), tmp_path / "m.nii.gz", slices="90")


def test_segment_volume_with_the_click_tool(tool, mni, tmp_path):
    """A real 2D segmenter: LiteMedSAM with one click inside the reference brain slice and its
    box. Checks the plumbing (each returned mask lands on its own slice, in the right voxels);
    the tool's accuracy on this template is the tool's business, not this module's."""
    from scipy.ndimage import distance_transform_edt

    t1, brain = mni
    ref = load_volume(brain)
    todo, returned = [70, 90], {}

    def click_slice(image):
        k = todo.pop(0)
        gt = ref.plane("axial", k) > 0
        ys, xs = np.nonzero(gt)
        y, x = np.unravel_index(np.argmax(distance_transform_edt(gt)), gt.shape)
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
        returned[k] = tool.predict(tool.embed(image), np.array([[x, y]], np.float32), np.array([1]), None, box=box).mask
        return returned[k]

    segment_volume(t1, click_slice, tmp_path / "brain.nii.gz", slices=[70, 90])
    vol = load_volume(tmp_path / "brain.nii.gz")
    for k in (70, 90):
        assert returned[k].any() and (vol.plane("axial", k).astype(bool) == returned[k]).all()
    assert vol.data.sum() == sum(int(m.sum()) for m in returned.values())

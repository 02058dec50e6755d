from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from ibisagent.data.pairs import Sample, read_pairs_csv
from ibisagent.data.report import check_samples
from ibisagent.data.sources import load_pairs, open_dataset
from ibisagent.errors import IbisInputError
from ibisagent.io.images import load_mask, mask_from_array


def test_binary_encodings_and_label_maps():
    base = np.zeros((8, 8), np.uint8)
    base[2:5, 3:6] = 1
    for scale in (1, 255, 7):
        assert mask_from_array(base * scale).sum() == 9
    assert mask_from_array(np.zeros((4, 4), np.uint8)).sum() == 0
    label = base.copy()
    label[6, 6] = 2
    with pytest.raises(IbisInputError, match="label map"):
        mask_from_array(label, what="x.png")
    with pytest.raises(IbisInputError, match="8 x 8 pixels but the image is 4 x 4"):
        mask_from_array(base, shape=(4, 4))
    noisy = (base * 255).astype(np.int16) + np.random.default_rng(0).integers(-10, 10, base.shape)
    assert mask_from_array(np.clip(noisy, 0, 255).astype(np.uint8)).sum() == 9


def test_zero_one_png_mask_reads_as_target(tmp_path):
    m = np.zeros((10, 12), np.uint8)
    m[3:6, 4:9] = 1
    Image.fromarray(m).save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").sum() == 15


def test_sample_from_arrays():
    img = np.arange(64 * 48, dtype=np.uint16).reshape(48, 64)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 10:20] = 255
    s = Sample.from_arrays(img, mask, "liver", "CT", name="vol.nii.gz", frame="axial:010")
    image, m = s.load()
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and m.dtype == bool and m.sum() == 100
    assert s.id == "vol.nii@axial:010/liver"


def test_demo_pairs_all_load(demo_dir):
    report = check_samples(read_pairs_csv(demo_dir))
    assert len(report.samples) == 9 and not report.skipped


def _bad_folder(demo_dir, root):
    """A pairs.csv with good rows and every kind of bad row; one image under a non-ASCII path."""
    (root / "imgs ü").mkdir(parents=True)
    (root / "masks").mkdir()
    ct = demo_dir / "images" / "06_CT_abdomen.png"
    shutil.copy(ct, root / "imgs ü" / "écho_01.png")
    shutil.copy(demo_dir / "masks" / "06_CT_abdomen__liver.png", root / "masks" / "liver.png")
    h, w = np.asarray(Image.open(ct)).shape[:2]
    Image.fromarray(np.zeros((h // 2, w // 2), np.uint8)).save(root / "masks" / "small.png")
    Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "masks" / "empty.png")
    lab = np.zeros((h, w), np.uint8)
    lab[10:40, 10:40], lab[50:90, 50:90] = 1, 2
    Image.fromarray(lab).save(root / "masks" / "labels.png")
    rows = [
        "image,mask,structure,modality",
        "imgs ü/écho_01.png,masks/liver.png,liver,CT",
        "imgs ü/écho_01.png,masks/small.png,spleen,CT",
        "imgs ü/écho_01.png,masks/empty.png,aorta,CT",
        "imgs ü/écho_01.png,masks/labels.png,kidney,CT",
        "imgs ü/missing.png,masks/liver.png,liver,CT",
        ",masks/liver.png,liver,CT",
    ]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_bad_rows_are_skipped_named_and_counted(demo_dir, tmp_path):
    root = _bad_folder(demo_dir, tmp_path / "bad")
    listed = load_pairs(root / "pairs.csv")
    assert len(listed.samples) == 4 and len(listed.skipped) == 2
    reasons = " | ".join(map(str, listed.skipped))
    assert "missing.png" in reasons and "pairs.csv:7" in reasons
    checked = check_samples(listed.samples)
    assert [s.structure for s in checked.samples] == ["liver"]
    by_id = {s.what: s.reason for s in checked.skipped}
    assert "pixels but the image is" in by_id["bad/écho_01/spleen"]
    assert "empty" in by_id["bad/écho_01/aorta"]
    assert "label map" in by_id["bad/écho_01/kidney"]
    with pytest.raises(IbisInputError, match="pairs.csv:7"):
        read_pairs_csv(root)  # the strict reader keeps its old contract


def test_tree_of_datasets_reports_broken_ones(demo_dir, tmp_path):
    shutil.copytree(demo_dir, tmp_path / "tree" / "demo")
    (tmp_path / "tree" / "broken").mkdir()
    (tmp_path / "tree" / "broken" / "pairs.csv").write_text("a,b\n1,2\n")
    (tmp_path / "tree" / "empty_dir").mkdir()
    report = open_dataset(tmp_path / "tree")
    assert len(report.samples) == 9
    assert len(report.skipped) == 1 and "expected columns" in report.skipped[0].reason
    with pytest.raises(IbisInputError, match="nothing this can read"):
        open_dataset(tmp_path / "tree" / "empty_dir")

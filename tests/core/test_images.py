import numpy as np
import pytest
from PIL import Image

from ibisagent.errors import IbisInputError
from ibisagent.io.images import load_image, load_mask, save_mask_png


@pytest.mark.parametrize(
    "array,mode",
    [
        (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20, "I;16"),
        (np.linspace(-3, 7, 48 * 64, dtype=np.float32).reshape(48, 64), "F"),
        (np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8), "L"),
        (np.random.default_rng(0).integers(0, 255, (48, 64, 4), dtype=np.uint8), "RGBA"),
    ],
)
def test_odd_images_become_rgb_uint8(tmp_path, array, mode):
    path = tmp_path / ("x.tif" if mode == "F" else "x.png")
    Image.fromarray(array, mode=None).save(path)
    img = load_image(path)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert img.max() > img.min()


def test_palette_png(tmp_path):
    Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (10, 10, 3)


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for p, msg in ((tmp_path / "bad.png", "bad.png"), (tmp_path / "none.png", "no such file"), (tmp_path, "directory")):
        with pytest.raises(IbisInputError, match=msg):
            load_image(p)


def test_mask_size_mismatch_and_binarisation(tmp_path):
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:7] = 200  # any {0, v} pair is a binary mask
    save_mask_png(tmp_path / "m.png", m > 0)
    Image.fromarray(m).save(tmp_path / "raw.png")
    assert load_mask(tmp_path / "raw.png").sum() == 12
    m[0, 0] = 100  # a third value: a label map, refused rather than thresholded (the one mask rule)
    Image.fromarray(m).save(tmp_path / "labels.png")
    with pytest.raises(IbisInputError, match="looks like a label map"):
        load_mask(tmp_path / "labels.png")
    with pytest.raises(IbisInputError, match="12 x 10 pixels but the image is 20 x 10"):
        load_mask(tmp_path / "m.png", shape=(10, 20))

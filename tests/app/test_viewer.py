"""The annotator's viewer in a real browser (Debian's Chromium driven by Playwright), on a 2D demo
image and a synthetic 40-slice CT volume: fit-to-view, zoom and pan, window/level by right-drag and
sliders, slice scrolling by wheel and keys, the three axes, brush and eraser, mask opacity and
outline, shortcuts, box prompts, the agent on a range of slices with progress and cancel, a
slice's accepted mask carried to the next slice, the volume mask as NIfTI, the dataset export, and
clear messages for bad input. Screenshots go to tests/artifacts/viewer/."""

from __future__ import annotations

import base64
import io
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.app.browser import NO_CHROMIUM, fresh_folder, open_page, served
from tests.app.conftest import XRAY

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "viewer"
SHAPE = (96, 80, 40)  # x, y, z voxels of the synthetic CT (axial slices: 80 rows x 96 columns)

pytestmark = [NO_CHROMIUM]


@pytest.fixture(scope="module")
def base_url(tool):
    from ibisagent.app.config import ServeConfig

    config = ServeConfig(max_upload_bytes=4 * 1024 * 1024, max_pixels=1024 * 1024, max_images=64, max_steps=2)
    with served(config, tool) as url:
        yield url


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return fresh_folder(ARTIFACTS)


@pytest.fixture()
def page(base_url, artifacts):
    with open_page(
        base_url + "/", "() => !document.getElementById('health').textContent.startsWith('connecting')"
    ) as pg:
        yield pg


@pytest.fixture(scope="module")
def ct_path(tmp_path_factory) -> Path:
    """A 40-slice CT-like NIfTI (HU): air, a body ellipse (40 HU) and a brighter organ (160 HU)."""
    nib = pytest.importorskip("nibabel", reason="the volumes extra is not installed")
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    vol = np.full(SHAPE, -1000, np.int16)
    vol[((x - 48) / 44) ** 2 + ((y - 40) / 36) ** 2 <= 1] = 40
    vol[((x - 36) / 14) ** 2 + ((y - 44) / 12) ** 2 + ((z - 20) / 16) ** 2 <= 1] = 160
    path = tmp_path_factory.mktemp("ct") / "synthetic_ct.nii.gz"
    img = nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.5, 1.0]))
    img.header["descrip"] = b"CT"
    nib.save(img, path)
    return path


def _settled(page, **attrs) -> dict:
    cond = " && ".join(["s.dataset.busy === '0'"] + [f"s.dataset.{k} === '{v}'" for k, v in attrs.items()])
    page.wait_for_function(f"() => {{ const s = document.getElementById('status'); return {cond}; }}")
    status = page.locator("#status")
    assert "error" not in (status.get_attribute("class") or ""), status.inner_text()
    return {k: int(status.get_attribute(f"data-{k}")) for k in ("clicks", "area", "steps")}


def _xy(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) (the canvas is zoomed and panned)."""
    box = page.locator("#view").bounding_box()
    w, h = page.evaluate("() => [document.getElementById('view').width, document.getElementById('view').height]")
    return box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h


def _drag(page, a, b, button="left", steps=8) -> None:
    page.mouse.move(*_xy(page, *a))
    page.mouse.down(button=button)
    page.mouse.move(*_xy(page, *b), steps=steps)
    page.mouse.up(button=button)


def _upload_xray(page, demo_dir) -> None:
    page.set_input_files("#image", str(demo_dir / XRAY))
    _settled(page, clicks="0", area="0")
    page.wait_for_function("() => document.getElementById('view').width === 1024")


def _upload_ct(page, ct_path) -> None:
    page.set_input_files("#image", str(ct_path))
    _settled(page, clicks="0")
    page.wait_for_function(f"() => document.getElementById('view').width === {SHAPE[0]}")


def _pixels(page) -> np.ndarray:
    """The canvas as drawn (H x W x 4 uint8), through a PNG data URL (fast to pass)."""
    from PIL import Image

    url = page.evaluate("() => document.getElementById('view').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def test_fit_zoom_pan_crisp(page, demo_dir):
    _upload_xray(page, demo_dir)
    stage, box = page.locator("#stage").bounding_box(), page.locator("#view").bounding_box()
    # fit to view: the whole image shows, touching the stage on one side, centred
    assert box["height"] == pytest.approx(stage["height"], abs=2) or box["width"] == pytest.approx(
        stage["width"], abs=2
    )
    assert box["x"] >= stage["x"] - 1 and box["x"] + box["width"] <= stage["x"] + stage["width"] + 1
    assert page.locator("#view").evaluate("e => getComputedStyle(e).imageRendering") == "pixelated"
    page.screenshot(path=str(ARTIFACTS / "01_fit.png"))
    fit_pct = page.locator("#zoominfo").inner_text()
    page.click("#zoomin")
    page.click("#zoomin")
    assert page.locator("#view").bounding_box()["width"] == pytest.approx(box["width"] * 1.5625, rel=0.01)
    # ctrl+wheel zooms at the pointer: the image pixel under it stays put
    cx, cy = _xy(page, 600, 500)
    page.mouse.move(cx, cy)
    page.keyboard.down("Control")
    for _ in range(8):
        page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    page.wait_for_timeout(100)
    nx, ny = _xy(page, 600, 500)
    assert abs(nx - cx) < 6 and abs(ny - cy) < 6
    zoomed = page.locator("#view").bounding_box()
    assert zoomed["width"] > 4 * box["width"]
    page.screenshot(path=str(ARTIFACTS / "02_zoomed_crisp.png"))
    # middle-drag pans
    page.mouse.move(cx, cy)
    page.mouse.down(button="middle")
    page.mouse.move(cx - 150, cy - 80, steps=5)
    page.mouse.up(button="middle")
    panned = page.locator("#view").bounding_box()
    assert panned["x"] == pytest.approx(zoomed["x"] - 150, abs=2) and panned["y"] == pytest.approx(
        zoomed["y"] - 80, abs=2
    )
    # the pan tool (H) pans with the left button, without adding clicks
    page.keyboard.press("h")
    at = page.locator("#view").bounding_box()
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 60, cy + 40, steps=4)
    page.mouse.up()
    moved = page.locator("#view").bounding_box()
    assert moved["x"] == pytest.approx(at["x"] + 60, abs=2) and _settled(page)["clicks"] == 0
    page.keyboard.press("c")
    page.keyboard.press("f")
    assert page.locator("#zoominfo").inner_text() == fit_pct
    assert page.locator("#view").bounding_box()["width"] == pytest.approx(box["width"], abs=1)


def test_window_level_drag_and_sliders(page, demo_dir):
    _upload_xray(page, demo_dir)
    before = _pixels(page)
    hud0 = page.locator("#hud").inner_text()
    _drag(page, (500, 500), (800, 300), button="right")  # right-drag: window and level change
    hud1 = page.locator("#hud").inner_text()
    assert hud1 != hud0 and _settled(page)["clicks"] == 0  # a drag is not a click
    after = _pixels(page)
    assert np.abs(after[..., 0].astype(int) - before[..., 0]).mean() > 5
    page.screenshot(path=str(ARTIFACTS / "03_window_level_drag.png"))
    page.eval_on_selector("#wlwidth", "e => { e.value = '100'; e.dispatchEvent(new Event('input')); }")
    assert page.locator("#hud").inner_text() != hud1
    # a right click without moving is still a negative point
    page.mouse.click(*_xy(page, 100, 100), button="right")
    s = _settled(page, clicks="1")
    assert s["clicks"] == 1 and "negative" in page.locator("#steps li.person").last.inner_text()


def test_brush_eraser_opacity_outline_undo_redo_keys(page, demo_dir):
    _upload_xray(page, demo_dir)
    assert "Ctrl" in page.locator("#shortcuts").inner_text() and page.locator("#shortcuts tr").count() >= 10
    page.keyboard.press("b")
    assert page.locator("input[name=tool][value=brush]").is_checked()
    page.eval_on_selector("#brushsize", "e => { e.value = '40'; e.dispatchEvent(new Event('input')); }")
    _drag(page, (300, 300), (700, 300))
    painted = _settled(page)["area"]
    assert 400 * 36 < painted < 440 * 42
    page.screenshot(path=str(ARTIFACTS / "04_brush.png"))
    page.keyboard.press("e")
    _drag(page, (500, 250), (500, 350))
    erased = _settled(page)["area"]
    assert painted - 44 * 44 < erased < painted - 30 * 30
    page.screenshot(path=str(ARTIFACTS / "05_eraser.png"))
    # opacity and outline change what is drawn, not the mask
    px = _pixels(page)
    page.eval_on_selector("#opacity", "e => { e.value = '90'; e.dispatchEvent(new Event('input')); }")
    assert np.abs(_pixels(page).astype(int) - px).sum() > 0
    page.keyboard.press("o")
    assert not page.locator("#outline").is_checked()
    no_outline = _pixels(page)
    yellow = (no_outline[..., 0] > 250) & (no_outline[..., 1] > 210) & (no_outline[..., 2] < 10)
    assert yellow.sum() == 0
    page.keyboard.press("o")
    with_outline = _pixels(page)
    yellow = (with_outline[..., 0] > 250) & (with_outline[..., 1] > 210) & (with_outline[..., 2] < 10)
    assert yellow.sum() > 800
    page.screenshot(path=str(ARTIFACTS / "06_outline_opacity.png"))
    assert _settled(page)["area"] == erased
    # Ctrl+Z undoes the eraser stroke, Ctrl+Y redoes it, Ctrl+Shift+Z too
    page.keyboard.press("Control+z")
    assert _settled(page, area=str(painted))["area"] == painted
    page.keyboard.press("Control+y")
    _settled(page, area=str(erased))
    page.keyboard.press("Control+z")
    _settled(page, area=str(painted))
    page.keyboard.press("Control+Shift+z")
    _settled(page, area=str(erased))
    # P / N choose the click mode; C the click tool; a positive click keeps the strokes on top
    page.keyboard.press("n")
    assert page.locator("input[name=mode][value='0']").is_checked()
    page.keyboard.press("p")
    assert page.locator("input[name=mode][value='1']").is_checked()
    page.keyboard.press("c")
    page.mouse.click(*_xy(page, 760, 620))
    s = _settled(page, clicks="1")
    assert s["area"] > 0
    page.keyboard.press("Control+z")
    _settled(page, clicks="0", area=str(erased))


def test_box_prompt(page, demo_dir):
    _upload_xray(page, demo_dir)
    page.keyboard.press("x")
    _drag(page, (600, 250), (900, 800))  # around the left lung (the image's right side)
    s = _settled(page)
    assert s["clicks"] == 0 and 30_000 < s["area"] < 300_000
    assert page.locator("#marks rect").count() == 1
    page.screenshot(path=str(ARTIFACTS / "07_box.png"))
    page.keyboard.press("c")
    page.mouse.click(*_xy(page, 760, 620))  # a click refines the box's mask
    assert _settled(page, clicks="1")["area"] > 0
    page.keyboard.press("Control+z")  # pressed while the first undo runs: queued, not dropped
    page.keyboard.press("Control+z")
    _settled(page, clicks="0", area="0")


def test_volume_slices_axes_wheel_keys_presets(page, ct_path):
    _upload_ct(page, ct_path)
    info = page.locator("#sliceinfo")
    assert info.inner_text().startswith(f"axial slice {SHAPE[2] // 2} of {SHAPE[2]}")
    assert page.locator("#hud").inner_text().startswith(f"axial slice {SHAPE[2] // 2} of {SHAPE[2]}")
    page.mouse.move(*_xy(page, 40, 40))
    page.mouse.wheel(0, 100)
    page.wait_for_function("() => document.getElementById('sliceinfo').textContent.startsWith('axial slice 21 ')")
    page.mouse.wheel(0, -100)
    page.mouse.wheel(0, -100)
    page.wait_for_function("() => document.getElementById('sliceinfo').textContent.startsWith('axial slice 19 ')")
    _settled(page)
    page.keyboard.press("ArrowUp")
    page.wait_for_function("() => document.getElementById('sliceinfo').textContent.startsWith('axial slice 20 ')")
    _settled(page)
    page.keyboard.press("PageDown")
    page.wait_for_function("() => document.getElementById('sliceinfo').textContent.startsWith('axial slice 19 ')")
    _settled(page)
    page.screenshot(path=str(ARTIFACTS / "08_volume_axial.png"))
    # CT presets set window/level: lung shows the body white, abdomen shows the organ brighter than the body
    page.select_option("#window", "lung")
    _settled(page)
    assert "W 1500  L -600" in page.locator("#hud").inner_text()
    page.select_option("#window", "abdomen")
    _settled(page)
    px = _pixels(page)[..., 0]
    assert px[35, 59] > px[39, 15] > px[2, 2]  # organ > body > air (display: column 95 - x, row 79 - y)
    # coronal and sagittal: the slice's pixel aspect follows the voxel spacing (2.5 mm slices)
    page.select_option("#axis", "coronal")
    page.wait_for_function(f"() => document.getElementById('view').height === {SHAPE[2]}")
    _settled(page)
    assert info.inner_text().startswith(f"coronal slice {SHAPE[1] // 2} of {SHAPE[1]}")
    box = page.locator("#view").bounding_box()
    assert box["height"] / box["width"] == pytest.approx(SHAPE[2] * 2.5 / SHAPE[0], rel=0.02)
    page.screenshot(path=str(ARTIFACTS / "09_volume_coronal.png"))
    page.select_option("#axis", "sagittal")
    page.wait_for_function(f"() => document.getElementById('view').width === {SHAPE[1]}")
    _settled(page)
    page.screenshot(path=str(ARTIFACTS / "10_volume_sagittal.png"))
    # the tool sees a slice as the person windows it: a narrow window, then a click embeds that
    page.select_option("#axis", "axial")
    page.wait_for_function(f"() => document.getElementById('view').width === {SHAPE[0]}")
    _settled(page)
    page.eval_on_selector("#wlwidth", "e => { e.value = '40'; e.dispatchEvent(new Event('input')); }")
    page.mouse.click(*_xy(page, 59, 35))
    assert _settled(page, clicks="1")["area"] > 50
    low, high = page.evaluate("() => [slot.window.low, slot.window.high]")
    assert high - low == pytest.approx(2 * 1160 * 40 / 1000, rel=0.01)  # intensities span -1000..160


def test_volume_click_accept_carry_nifti_export(page, ct_path):
    nib = pytest.importorskip("nibabel")
    from ibisagent.data.pairs import read_pairs_csv

    _upload_ct(page, ct_path)
    page.mouse.click(*_xy(page, 59, 35))  # inside the organ (display: column 95 - x, row 79 - y)
    first = _settled(page, clicks="1")
    assert first["area"] > 50
    page.fill("#query", "Segment the liver")
    page.evaluate("() => document.activeElement.blur()")  # keys reach the viewer, not the text field
    page.keyboard.press("a")  # accept: the next slice starts from this mask
    page.wait_for_function("() => document.getElementById('sliceinfo').textContent.startsWith('axial slice 21 ')")
    carried = _settled(page)
    assert carried["area"] == first["area"] and page.locator("#acceptedinfo").get_attribute("data-count") == "1"
    page.screenshot(path=str(ARTIFACTS / "11_carried_to_next_slice.png"))
    page.mouse.click(*_xy(page, 64, 35))  # a click refines the carried mask
    refined = _settled(page, clicks="1")
    assert refined["area"] > 50
    page.keyboard.press("a")
    page.wait_for_function("() => document.getElementById('acceptedinfo').dataset.count === '2'")
    _settled(page)
    with page.expect_download() as dl:
        page.click("#dlnifti")
    out = ARTIFACTS / dl.value.suggested_filename
    dl.value.save_as(out)
    m = nib.load(str(out))
    vox = np.asarray(m.dataobj)
    src = nib.load(str(ct_path))
    assert out.name == "synthetic_ct_mask.nii.gz" and m.shape == SHAPE and np.allclose(m.affine, src.affine)
    per_slice = vox.sum(axis=(0, 1))
    assert per_slice[20] == first["area"] and per_slice[21] == refined["area"]
    assert per_slice[22] == refined["area"] and per_slice.sum() == first["area"] + 2 * refined["area"]  # 22: carried
    with page.expect_download() as dl:
        page.click("#export")
    zpath = ARTIFACTS / "annotations.zip"
    dl.value.save_as(zpath)
    folder = ARTIFACTS / "annotations"
    shutil.rmtree(folder, ignore_errors=True)
    zipfile.ZipFile(zpath).extractall(folder)
    samples = read_pairs_csv(folder / "pairs.csv")
    assert len(samples) == 2 and {s.structure for s in samples} == {"liver"}
    image, mask = samples[0].load()
    assert image.shape[:2] == (SHAPE[1], SHAPE[0]) and int(mask.sum()) == first["area"]


def test_agent_on_40_slices_progress_and_cancel(page, ct_path):
    _upload_ct(page, ct_path)
    page.fill("#query", "Segment the liver")
    page.fill("#maxsteps", "1")
    page.click("#rangeall")
    assert page.locator("#rangefrom").input_value() == "0" and page.locator("#rangeto").input_value() == "39"
    page.click("#runrange")
    page.wait_for_function("() => Number(document.getElementById('progressbox').dataset.done || 0) >= 2")
    assert page.locator("#progressbox").is_visible() and "of 40 done" in page.locator("#progressinfo").inner_text()
    page.screenshot(path=str(ARTIFACTS / "12_range_progress.png"))
    t0 = time.perf_counter()
    page.click("#cancelrange")
    page.wait_for_function("() => document.getElementById('progressbox').dataset.state === 'cancelled'")
    assert time.perf_counter() - t0 < 2.0  # the page stops waiting for the slice in flight
    _settled(page)
    done = int(page.locator("#progressbox").get_attribute("data-done"))
    assert 2 <= done < 40 and f"cancelled after {done} of 40" in page.locator("#status").inner_text()
    page.screenshot(path=str(ARTIFACTS / "13_range_cancelled.png"))
    # the page shows the last slice done, or the one whose run was cancelled (left blank)
    shown = int(page.locator("#sliceinfo").inner_text().split()[2])
    assert shown in (done - 1, done)


def test_single_agent_run_shows_progress(page, demo_dir):
    _upload_xray(page, demo_dir)
    page.fill("#query", "Segment the left lung")
    page.fill("#maxsteps", "2")
    page.click("#run")
    page.wait_for_function("() => !document.getElementById('progressbox').hidden")
    assert "the agent is running" in page.locator("#progressinfo").inner_text()
    page.wait_for_function("() => Number(document.getElementById('status').dataset.steps) > 0")
    _settled(page)
    page.wait_for_function("() => document.getElementById('progressbox').hidden")


def _status_error(page) -> str:
    page.wait_for_function("() => document.getElementById('status').className === 'error'")
    return page.locator("#status").inner_text()


def test_bad_input_messages(page, tmp_path):
    nib = pytest.importorskip("nibabel")
    pytest.importorskip("pydicom")
    from PIL import Image

    from tests.data.dicom_series import write_series

    four_d = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6, 3), np.int16), np.eye(4)), four_d)
    page.set_input_files("#image", str(four_d))
    msg = _status_error(page)
    assert "expected a 3D volume" in msg and "(8, 8, 6, 3)" in msg
    page.screenshot(path=str(ARTIFACTS / "14_error_4d.png"))

    data = np.zeros((16, 16, 3), np.int16)
    write_series(data, tmp_path / "a", uid="1.2.3.4")
    write_series(data, tmp_path / "b", uid="1.2.3.5", first_k=3)
    files = sorted((tmp_path / "a").glob("*.dcm")) + sorted((tmp_path / "b").glob("*.dcm"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, mixed / f"m{i:02d}.dcm")
    page.set_input_files("#image", sorted(str(p) for p in mixed.glob("*.dcm")))
    msg = _status_error(page)
    assert "2 series mixed" in msg and "one series" in msg
    page.screenshot(path=str(ARTIFACTS / "15_error_mixed_series.png"))
    # one series' files together make a volume
    page.set_input_files("#image", sorted(str(p) for p in (tmp_path / "a").glob("*.dcm")))
    _settled(page)
    assert page.locator("#volbox").is_visible() and "of 3" in page.locator("#sliceinfo").inner_text()

    huge = tmp_path / "huge.png"
    Image.fromarray(np.zeros((1100, 1100), np.uint8)).save(huge)  # over max_pixels (1024 x 1024)
    page.set_input_files("#image", str(huge))
    msg = _status_error(page)
    assert "1100" in msg or "pixels" in msg
    page.screenshot(path=str(ARTIFACTS / "16_error_huge_image.png"))
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(5 * 1024 * 1024))  # over max_upload_bytes: refused before upload
    page.set_input_files("#image", str(big))
    msg = _status_error(page)
    assert "5.2 MB" in msg and "4.2 MB" in msg


def test_annotate_routes(tool, ct_path):
    """The plane endpoint gives the same intensities the slice tool windows (display orientation)."""
    nib = pytest.importorskip("nibabel")
    from fastapi.testclient import TestClient

    from ibisagent.app.api import create_app
    from ibisagent.app.config import ServeConfig
    from ibisagent.data.volume_io import display

    raw = ct_path.read_bytes()
    with TestClient(create_app(ServeConfig(max_images=4), tool=tool)) as c:
        r = c.post("/v1/volumes", content=raw, headers={"content-type": "application/gzip", "x-filename": "ct.nii.gz"})
        assert r.status_code == 200, r.text
        vid = r.json()["volume_id"]
        r = c.get(f"/v1/annotate/volumes/{vid}/plane", params={"axis": "axial", "index": 20})
        H, W = map(int, r.headers["x-shape"].split(","))
        plane = np.frombuffer(r.content, "<f4").reshape(H, W)
        vol = np.asarray(nib.load(str(ct_path)).dataobj)
        assert np.array_equal(plane, display(vol[:, :, 20]).astype(np.float32))
        meta = c.get(f"/v1/annotate/volumes/{vid}").json()
        assert meta["aspect"]["coronal"] == pytest.approx(2.5) and meta["windows"]["abdomen"] == [-160.0, 240.0]
        assert c.get(f"/v1/annotate/volumes/{vid}/plane", params={"index": 99}).status_code == 400
        sl = c.post(f"/v1/annotate/volumes/{vid}/slice", json={"axis": "axial", "index": 20, "low": 0, "high": 200})
        assert sl.status_code == 200 and sl.json()["window"] == "0..200" and sl.json()["width"] == SHAPE[0]
        bad = c.post(f"/v1/annotate/volumes/{vid}/slice", json={"axis": "axial", "index": 20, "low": 5, "high": 5})
        assert bad.status_code == 400 and "low < high" in bad.json()["error"]
        assert c.get("/static/app.js").status_code == 200 and c.get("/static/secret.py").status_code == 404
        bad = c.post(f"/v1/annotate/volumes/{vid}/masks", json={"axis": "axial", "masks": {}})
        assert bad.status_code == 400 and "no slice masks" in bad.json()["error"]
        z = c.post("/v1/annotate/export", json={"items": [{"mask": {"size": [1, 1], "counts": [1]}}]})
        assert z.status_code == 400 and "give image_id" in z.json()["error"]

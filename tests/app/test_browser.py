"""The web page in a real browser (Debian's Chromium driven by Playwright): upload a real image,
run the agent, click on the canvas, see the mask change, undo, download the mask and the episode.
Screenshots of each state go to tests/artifacts/browser/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.app.browser import NO_CHROMIUM, fresh_folder, open_page, served
from tests.app.conftest import XRAY, XRAY_LEFT_LUNG

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"

pytestmark = [NO_CHROMIUM]


@pytest.fixture(scope="module")
def base_url(tool, app_config):
    with served(app_config, tool) as url:
        yield url


@pytest.fixture(scope="module")
def artifacts() -> Path:
    return fresh_folder(ARTIFACTS)


@pytest.fixture()
def page(base_url, artifacts):
    with open_page(base_url + "/") as pg:
        yield pg


def _settled(page, **attrs) -> dict:
    """Wait until the status line is idle (and has the given data- attributes); return them."""
    cond = " && ".join(["s.dataset.busy === '0'"] + [f"s.dataset.{k} === '{v}'" for k, v in attrs.items()])
    page.wait_for_function(f"() => {{ const s = document.getElementById('status'); return {cond}; }}")
    status = page.locator("#status")
    assert "error" not in (status.get_attribute("class") or ""), status.inner_text()
    return {k: status.get_attribute(f"data-{k}") for k in ("clicks", "area", "steps")}


def _click_image(page, x: int, y: int, width: int, height: int, **kw) -> None:
    """Click the canvas at image pixel (x, y) (the canvas is shown scaled)."""
    box = page.locator("#view").bounding_box()
    page.locator("#view").click(
        position={"x": (x + 0.5) * box["width"] / width, "y": (y + 0.5) * box["height"] / height}, **kw
    )


def test_page_upload_run_click_download(page, demo_dir):
    from ibisagent.env.episode import Episode
    from ibisagent.io.images import load_mask

    page.wait_for_function("() => !document.getElementById('health').textContent.startsWith('connecting')")
    assert "litemedsam" in page.locator("#health").inner_text()
    # what the selected policy knows: suggestions for the question; no Teach button unless the operator enables it
    page.wait_for_function("() => !document.getElementById('knownbox').hidden")
    assert page.locator("#structures option[value='Segment the liver.']").count() == 1
    assert page.locator("#knowncount").inner_text().startswith("knows ") and page.locator("#teach").is_hidden()
    page.set_input_files("#image", str(demo_dir / XRAY))
    _settled(page, clicks="0", area="0")
    page.wait_for_function("() => document.getElementById('view').width === 1024")
    page.screenshot(path=str(ARTIFACTS / "1_uploaded.png"))

    page.set_input_files("#reference", str(demo_dir / XRAY_LEFT_LUNG))
    _settled(page)
    page.fill("#query", "Segment the left lung")
    page.fill("#maxsteps", "4")
    page.click("#run")
    page.wait_for_function("() => Number(document.getElementById('status').dataset.steps) > 0")
    agent = _settled(page)
    n_agent = int(agent["steps"])
    assert 1 <= n_agent <= 4 and int(agent["clicks"]) >= 1 and "IoU" in page.locator("#status").inner_text()
    assert page.locator("#steps li").count() == n_agent
    page.screenshot(path=str(ARTIFACTS / "2_agent.png"))

    # a person's positive click inside the left lung (image right side), then a negative one outside it
    _click_image(page, 760, 620, 1024, 1024)
    pos = _settled(page, clicks=str(int(agent["clicks"]) + 1))
    assert pos["area"] != agent["area"] and int(pos["area"]) > 0
    page.screenshot(path=str(ARTIFACTS / "3_positive_click.png"))
    _click_image(page, 512, 900, 1024, 1024, modifiers=["Shift"])
    neg = _settled(page, clicks=str(int(agent["clicks"]) + 2))
    assert (
        page.locator("#steps li.person").count() == 2
        and "negative" in page.locator("#steps li.person").last.inner_text()
    )
    page.screenshot(path=str(ARTIFACTS / "4_negative_click.png"))

    page.click("#undo")
    undone = _settled(page, clicks=pos["clicks"])
    assert undone["area"] == pos["area"]
    page.screenshot(path=str(ARTIFACTS / "5_undo.png"))
    assert neg["clicks"] != undone["clicks"]

    with page.expect_download() as dl:
        page.click("#dlmask")
    mask_path = ARTIFACTS / dl.value.suggested_filename
    dl.value.save_as(mask_path)
    mask = load_mask(mask_path)
    assert mask.shape == (1024, 1024) and int(mask.sum()) == int(pos["area"])

    with page.expect_download() as dl:
        page.click("#dlepisode")
    ep_path = ARTIFACTS / dl.value.suggested_filename
    dl.value.save_as(ep_path)
    ep = Episode.from_dict(json.loads(ep_path.read_text()))
    x, y, label = ep.steps[-1].click  # the canvas is scaled: the pixel may be off by one
    assert len(ep.steps) == n_agent + 1 and abs(x - 760) <= 1 and abs(y - 620) <= 1 and label == 1
    assert np.array_equal(ep.final_mask, mask)

    page.click("#reset")
    _settled(page, clicks="0", area="0")
    page.screenshot(path=str(ARTIFACTS / "6_reset.png"))


def test_page_shows_clear_error_for_wrong_file(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    page.set_input_files("#image", str(bad))
    page.wait_for_function("() => document.getElementById('status').className === 'error'")
    assert "not a PNG" in page.locator("#status").inner_text()
    page.screenshot(path=str(ARTIFACTS / "7_error.png"))


def test_page_volume_slice_click_nifti(page, tmp_path):
    nib = pytest.importorskip("nibabel", reason="the volumes extra is not installed")
    datasets = pytest.importorskip("nilearn.datasets", reason="nilearn (the MNI152 template) is not installed")
    t1 = datasets.load_mni152_template()
    path = tmp_path / "mni152.nii.gz"
    nib.save(t1, path)
    page.set_input_files("#image", str(path))
    _settled(page, clicks="0")
    assert page.locator("#volbox").is_visible() and "axial slice 94 of 189" in page.locator("#sliceinfo").inner_text()
    page.eval_on_selector("#slice", "el => { el.value = '80'; el.dispatchEvent(new Event('change')); }")
    page.wait_for_function("() => document.getElementById('sliceinfo').textContent.startsWith('axial slice 80')")
    _settled(page, clicks="0")
    W, H = t1.shape[0], t1.shape[1]  # an axial slice in display orientation: columns = x, rows = y
    page.wait_for_function(f"() => document.getElementById('view').width === {W}")
    _click_image(page, W // 2, H // 2, W, H)
    after = _settled(page, clicks="1")
    page.screenshot(path=str(ARTIFACTS / "8_volume_click.png"))
    with page.expect_download() as dl:
        page.click("#dlnifti")
    out = ARTIFACTS / dl.value.suggested_filename
    dl.value.save_as(out)
    m = nib.load(str(out))
    vox = np.asarray(m.dataobj)
    assert out.name == "mni152_mask.nii.gz" and m.shape == t1.shape and np.allclose(m.affine, t1.affine)
    assert int(vox.sum()) == int(after["area"]) and int(vox[:, :, 80].sum()) == int(vox.sum())

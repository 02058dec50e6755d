"""The tool's local update rule (tools/local_update.py, LiteMedSAMTool(update="local"))."""

from __future__ import annotations

import numpy as np
import pytest

from ibisagent.tools.local_update import changed_regions_at, merge_local


def disk(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def logits(mask):
    return np.where(mask, 8.0, -8.0).astype(np.float32)


def test_a_click_on_one_part_keeps_the_others():
    shape = (64, 64)
    prev = logits(disk(shape, 16, 16, 6) | disk(shape, 48, 48, 6))
    # The decoder's new answer grew the first part and dropped the second one.
    new = logits(disk(shape, 16, 16, 10))
    merged = merge_local(new, prev, click_xy=(24, 16))
    assert (merged > 0)[16, 24]  # the clicked growth is taken
    assert (merged > 0)[48, 48]  # the part far from the click is kept
    assert (merged[disk(shape, 48, 48, 6)] == prev[disk(shape, 48, 48, 6)]).all()
    # Without the rule the second part would be gone.
    assert not (new > 0)[48, 48]


def test_only_changes_touching_the_click_are_taken():
    shape = (64, 64)
    prev = logits(np.zeros(shape, bool))
    new = logits(disk(shape, 10, 10, 4) | disk(shape, 50, 50, 4))
    region = changed_regions_at(new, prev, (10, 10))
    assert region[10, 10] and not region[50, 50]
    merged = merge_local(new, prev, (10, 10))
    assert (merged > 0).sum() == disk(shape, 10, 10, 4).sum()


def test_a_click_beside_the_change_still_finds_it():
    shape = (32, 32)
    prev = logits(np.zeros(shape, bool))
    new = logits(disk(shape, 10, 10, 2))
    # (13, 10) lies one cell outside the new disk: the 3 x 3 neighbourhood reaches it.
    assert changed_regions_at(new, prev, (13, 10))[10, 10]


@pytest.mark.parametrize(("fallback", "expect_new"), [("new", True), ("keep", False)])
def test_an_ignored_click_follows_the_fallback(fallback, expect_new):
    shape = (32, 32)
    prev = logits(disk(shape, 8, 8, 3))
    new = logits(disk(shape, 24, 24, 3))  # changed nowhere near the click at (8, 24)
    merged = merge_local(new, prev, (8, 24), fallback=fallback)
    assert np.array_equal(merged, new if expect_new else prev)


def test_the_valid_area_bounds_the_change():
    shape = (32, 32)
    prev = logits(np.zeros(shape, bool))
    new = logits(np.ones(shape, bool))
    region = changed_regions_at(new, prev, (2, 2), valid=(10, 20))
    assert region[:10, :20].all() and not region[10:].any() and not region[:, 20:].any()


def test_an_unknown_fallback_is_refused():
    z = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="fallback"):
        merge_local(z, z, (0, 0), fallback="maybe")


def test_the_tool_changes_only_what_touches_the_newest_click(tool, demo_samples):
    from ibisagent.clicker import next_click
    from ibisagent.errors import IbisInputError
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.tools.litemedsam_model import to_model_coords

    sample = demo_samples[0]
    image, gt = sample.load()
    ys, xs = np.nonzero(gt)
    first = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
    r1 = tool.predict(image, first, np.array([1]))
    # The simulator's next click: the decoder redraws the whole mask, the local rule keeps the
    # previous logits away from the click.
    x, y, label, _ = next_click(r1.mask, gt, clicked=first.tolist())
    second = np.array([[x, y]], np.float32)
    points, labels = np.concatenate([first, second]), np.array([1, label])
    r_global = tool.predict(image, points, labels, r1.logits)
    tool.update = "local:keep"  # the session's tool, put back below: a second tool costs seconds
    try:
        r_local = tool.predict(image, points, labels, r1.logits)
    finally:
        tool.update = "global"
    emb = tool.embed(image)
    prev, new, merged = r1.logits[0, 0].numpy(), r_global.logits[0, 0].numpy(), r_local.logits[0, 0].numpy()
    region = changed_regions_at(new, prev, to_model_coords(second[0], emb.original_size), emb.input_size)
    assert region.any() and (new > 0).sum() != (merged > 0).sum()  # the rule did something here
    assert np.array_equal(merged[~region], prev[~region])
    assert np.array_equal(merged[region], new[region])
    with pytest.raises(IbisInputError, match="update"):
        LiteMedSAMTool(update="sideways")


def test_click_with_the_local_rule_keeps_what_the_click_does_not_touch(tmp_path, demo_dir):
    from PIL import Image
    from typer.testing import CliRunner

    from ibisagent.cli.main import app

    img = demo_dir / "images" / "06_CT_abdomen.png"
    given = disk((1024, 1024), 250, 250, 60) | disk((1024, 1024), 800, 800, 60)
    Image.fromarray(given.astype(np.uint8) * 255).save(tmp_path / "given.png")
    out = tmp_path / "fixed.png"
    args = ["click", str(img), "--mask", str(tmp_path / "given.png"), "--pos", "300,460", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--update", "local"])
    assert r.exit_code == 0, r.output
    fixed = np.asarray(Image.open(out)) > 0
    # The part far from the click is exactly as given (up to the 256-cell prior's edge).
    assert fixed[disk((1024, 1024), 800, 800, 50)].all()
    assert not fixed[disk((1024, 1024), 800, 800, 80) & ~disk((1024, 1024), 800, 800, 70)].any()
    bad = CliRunner().invoke(app, [*args, "--update", "sideways"])
    assert bad.exit_code == 2 and "update" in bad.output and "Traceback" not in bad.output


def test_the_server_builds_its_tool_with_the_update_rule(monkeypatch, tool):
    from ibisagent.app.config import ServeConfig
    from ibisagent.app.service import Service
    from ibisagent.errors import IbisInputError

    seen = {}

    def make_tool(spec, **kwargs):
        seen.update(kwargs)
        return tool

    monkeypatch.setattr("ibisagent.tools.make_tool", make_tool)
    Service(ServeConfig(update="local"))
    assert seen["update"] == "local"
    with pytest.raises(IbisInputError, match="update"):
        ServeConfig(tool="http://127.0.0.1:9", update="local").check()

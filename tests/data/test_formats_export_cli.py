from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from ibisagent.cli.main import app
from ibisagent.data.biomedparse import load_biomedparse
from ibisagent.data.manifest import load_manifest
from ibisagent.data.report import check_samples
from ibisagent.data.splits import split_by_image, validation_split
from ibisagent.io.images import load_mask
from ibisagent.io.rle import rle_encode


def test_biomedparse_layout(demo_samples, tmp_path):
    root = tmp_path / "BP" / "amos22" / "CT"
    for split in ("train", "train_mask"):
        (root / split).mkdir(parents=True)
    ct = [s for s in demo_samples if s.image.stem == "06_CT_abdomen"]
    shutil.copy(ct[0].image, root / "train" / "amos_0001_CT_abdomen.png")
    for s in ct:
        shutil.copy(s.mask, root / "train_mask" / f"amos_0001_CT_abdomen_{s.structure.replace(' ', '+')}.png")
    shutil.copy(ct[0].mask, root / "train_mask" / "orphan_CT_abdomen_liver.png")
    report = load_biomedparse(tmp_path / "BP")
    assert sorted(s.structure for s in report.samples) == sorted(s.structure for s in ct)
    assert {s.modality for s in report.samples} == {"CT"} and "left kidney" in {s.structure for s in report.samples}
    assert len(report.skipped) == 1 and "orphan" in report.skipped[0].what
    assert not check_samples(report.samples).skipped


def test_jsonl_manifest_with_files_rle_negatives_and_bad_lines(demo_samples, tmp_path):
    s = demo_samples[0]
    gt = load_mask(s.mask)
    lines = [
        {"image": str(s.image), "mask": str(s.mask), "structure": s.structure, "modality": "CT"},
        {"image": str(s.image), "mask_rle": rle_encode(gt), "structure": "rle " + s.structure},
        {"image": str(s.image), "structure": "optic disc", "negative": True},
        {"image": str(s.image), "mask_rle": {"size": [2, 2], "counts": [1, 1]}, "structure": "x"},
        {"image": "nope.png", "mask": str(s.mask), "structure": "x"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n"
    (tmp_path / "m.jsonl").write_text(text)
    report = load_manifest(tmp_path / "m.jsonl")
    assert len(report.samples) == 3 and len(report.skipped) == 3
    assert "m.jsonl:4" in str(report.skipped[0]) and "sum to 2" in report.skipped[0].reason
    _, rle_mask = report.samples[1].load()
    assert (rle_mask == gt).all() and report.samples[2].negative
    assert len(check_samples(report.samples).samples) == 3


def test_splits_keep_images_together(shared_data):
    if not shared_data.exists():
        pytest.skip("no ../shared/data")
    from ibisagent.data.sources import open_dataset

    samples = open_dataset(shared_data).samples
    train, test = split_by_image(samples, 20)
    assert {s.image_key for s in train}.isdisjoint({s.image_key for s in test})
    assert 0.1 < len(test) / len(samples) < 0.3
    assert split_by_image(samples, 20)[1] == test
    fit, val = validation_split(train, 20, 10)
    assert {s.image_key for s in fit}.isdisjoint({s.image_key for s in val}) and len(fit) + len(val) == len(train)
    assert 0.05 < len(val) / len(samples) < 0.15


def test_take_split_partitions_by_image(demo_samples):
    from ibisagent.data.splits import take_split
    from ibisagent.errors import IbisInputError

    train, held = take_split(demo_samples, "train", 50), take_split(demo_samples, "heldout", 50)
    assert take_split(demo_samples, "all") == list(demo_samples)
    assert len(train) + len(held) == len(demo_samples) and train and held
    assert {s.image_key for s in train}.isdisjoint({s.image_key for s in held})
    assert (train, held) == split_by_image(demo_samples, 50)
    with pytest.raises(IbisInputError, match="train, heldout"):
        take_split(demo_samples, "test")


def test_eval_run_split_option(demo_dir, tmp_path):
    from ibisagent.data.splits import take_split
    from ibisagent.errors import IbisInputError
    from ibisagent.eval.harness import load_samples

    train, _ = load_samples([demo_dir], split="train")
    assert train == take_split(load_samples([demo_dir])[0], "train")
    with pytest.raises(IbisInputError, match="no samples in the heldout split"):
        load_samples([demo_dir], split="heldout")  # the 10 demo images all hash to the training side
    r = CliRunner().invoke(app, ["eval", "run", "--data", str(demo_dir), "--split", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "expected one of all, train, heldout" in r.output


def test_cli_inspect_queries_export(demo_dir, tmp_path):
    run = CliRunner().invoke
    r = run(
        app, ["data", "inspect", str(demo_dir), "--sheet", str(tmp_path / "s.png"), "--json", str(tmp_path / "c.json")]
    )
    assert r.exit_code == 0, r.output
    assert "9 samples" in r.output and (tmp_path / "s.png").stat().st_size > 1000
    assert json.loads((tmp_path / "c.json").read_text())["per_modality"]["CT"] == 4
    r = run(app, ["data", "queries", str(demo_dir), "--out", str(tmp_path / "q.jsonl"), "--seed", "3"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert {x["kind"] for x in rows} == {"referring", "reasoning", "refinement", "closed"}
    assert any(not x["target_present"] for x in rows)
    pytest.importorskip("datasets")
    r = run(
        app,
        [
            "data",
            "export",
            str(demo_dir),
            "--out",
            str(tmp_path / "hf"),
            "--kinds",
            "referring,closed",
            "--heldout-percent",
            "30",
        ],
    )
    assert r.exit_code == 0, r.output
    from datasets import load_from_disk

    d = load_from_disk(str(tmp_path / "hf"))
    total = sum(len(v) for v in d.values())
    assert total == 18 and set(d) <= {"train", "test"}
    row = d["train"][0]
    assert row["image"].size == row["mask"].size and set(np.unique(np.asarray(row["mask"]))) <= {0, 255}


def test_cli_bad_input_is_one_line(tmp_path):
    r = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such file or folder" in r.output and "Traceback" not in r.output

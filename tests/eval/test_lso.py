"""Leave-source-out folds: grouping by source, target choice, resumable fold files, pooled summary."""

import json
from pathlib import Path

import pytest

from ibisagent.data.pairs import Sample
from ibisagent.errors import IbisInputError
from ibisagent.train import leave_source_out as lso


def fake_samples(sizes: dict[str, int]) -> list[Sample]:
    return [
        Sample(Path(f"/d/{src}/images/{i:03d}.png"), Path(f"/d/{src}/masks/{i:03d}.png"), "liver", origin=src)
        for src, n in sizes.items()
        for i in range(n)
    ]


def test_folds_keep_each_source_whole_and_balance_pairs():
    samples = fake_samples({"a": 40, "b": 30, "c": 20, "d": 10, "e": 10, "f": 5})
    fold_of = lso.assign_folds(samples, 3)
    assert set(fold_of) == {"a", "b", "c", "d", "e", "f"} and set(fold_of.values()) == {0, 1, 2}
    load = [sum(1 for s in samples if fold_of[s.origin] == k) for k in range(3)]
    assert max(load) - min(load) <= 10, load
    with pytest.raises(IbisInputError, match="folds"):
        lso.assign_folds(samples, 7)


def test_targets_per_source_are_seeded_and_independent_of_list_order():
    samples = fake_samples({"a": 40, "b": 3})
    cfg = lso.LSOConfig(folds=2, per_source=5, train_per_source=10)
    _, pool, targets = lso.plan(samples, cfg)
    _, pool2, targets2 = lso.plan(list(reversed(samples)), cfg)
    assert [s.id for s in targets] == [s.id for s in targets2]
    assert sum(s.origin == "a" for s in targets) == 5 and sum(s.origin == "b" for s in targets) == 3
    assert len({s.image for s in pool if s.origin == "a"}) == 10 and {s.id for s in pool} == {s.id for s in pool2}
    # the evaluation targets come first in the same seeded order, so they are among the pool's images
    assert {s.image for s in targets if s.origin == "a"} <= {s.image for s in pool}
    other = lso.plan(samples, lso.LSOConfig(folds=2, per_source=5, seed=1))[2]
    assert [s.id for s in other] != [s.id for s in targets]


def fold_record(fold: int, cfg: lso.LSOConfig, items: dict[str, dict[str, float]], source: str) -> dict:
    results = {}
    for name, per_item in items.items():
        results[name] = {
            "n": len(per_item),
            "mean_iou": sum(per_item.values()) / len(per_item),
            "per_item": per_item,
            "called_absent": 0.0,
            "no_mask": 0.0,
        }
    return {
        "fold": fold,
        "sources": [source],
        "config": json.loads(json.dumps(lso.asdict(cfg))),
        "minutes_train": 1.0,
        "minutes_eval": 0.5,
        "source_of": {i: source for i in items["compact"]},
        "results": results,
        "absent": {"n": 4, "stop_no_accuracy": 0.75},
    }


def test_summary_pools_folds_with_intervals_and_checks_the_centre_click(tmp_path):
    cfg = lso.LSOConfig(folds=2, baselines=("centre",))
    recs = [
        fold_record(0, cfg, {"compact": {"a1": 0.8, "a2": 0.6}, "centre": {"a1": 0.2, "a2": 0.4}}, "a"),
        fold_record(1, cfg, {"compact": {"b1": 0.1, "b2": 0.2}, "centre": {"b1": 0.3, "b2": 0.4}}, "b"),
    ]
    for r in recs:
        (tmp_path / f"fold_{r['fold']}.json").write_text(json.dumps(r))
    (tmp_path / "fold_0.old.json").write_text(json.dumps(recs[0]))  # not a fold file: ignored
    s = lso.summarise(tmp_path)
    assert s["n_targets"] == 4 and s["folds_done"] == [0, 1]
    assert s["policies"]["compact"]["mean_iou"] == pytest.approx(0.425)
    assert s["policies"]["compact"]["low"] <= 0.425 <= s["policies"]["compact"]["high"]
    assert s["compact_minus"]["centre"]["diff"] == pytest.approx(0.425 - 0.325)
    assert s["compact_at_least_centre_on_every_fold"] is False  # fold 1: 0.15 < 0.35
    assert s["per_source"]["b"]["centre"] == pytest.approx(0.35)
    assert s["absent_said_no"] == pytest.approx(0.75)
    assert "| compact | 0.425 |" in (tmp_path / "summary.md").read_text()


def test_done_folds_are_skipped_and_other_settings_refused(tmp_path, monkeypatch):
    cfg = lso.LSOConfig(folds=2, baselines=("centre",))
    samples = fake_samples({"a": 4, "b": 4})
    done = fold_record(0, cfg, {"compact": {"a1": 0.5}, "centre": {"a1": 0.4}}, "a")
    (tmp_path / "fold_0.json").write_text(json.dumps(done))
    ran = []

    def fake_run_fold(fold, samples, emb_files, cfg, out, log=print):
        ran.append(fold)
        rec = fold_record(fold, cfg, {"compact": {"b1": 0.5}, "centre": {"b1": 0.4}}, "b")
        (out / f"fold_{fold}.json").write_text(json.dumps(rec))
        return rec

    monkeypatch.setattr(lso, "run_fold", fake_run_fold)
    summary = lso.run_lso(samples, {}, cfg, tmp_path, log=lambda *a: None)
    assert ran == [1] and summary["folds_done"] == [0, 1]
    with pytest.raises(IbisInputError, match=r"other settings \(minutes: 30.0 there, 1.0 now\)"):
        lso.run_lso(samples, {}, lso.LSOConfig(folds=2, minutes=1.0, baselines=("centre",)), tmp_path, log=print)


def test_teaching_pairs_never_share_an_image_with_the_evaluation_targets():
    samples = fake_samples({"a": 20, "b": 12})
    # two targets on one image: the second must not be taught while the first is evaluated
    extra = Sample(samples[0].image, samples[0].mask, "spleen", origin="a")
    cfg = lso.LSOConfig(folds=2, per_source=6)
    pairs, held = lso.teach_pairs([*samples, extra], cfg, "a", 5)
    assert len(pairs) == 5 and len(held) == 6 and {s.origin for s in pairs + held} == {"a"}
    assert not {s.image for s in pairs} & {s.image for s in held}
    assert lso.teach_pairs(samples, cfg, "b", 10)[0] == lso.teach_pairs(samples, cfg, "b", 6)[0]  # only 6 left


def test_teaching_pairs_are_of_one_structure():
    """Teaching needs its pairs per structure: a source of two structures teaches the one with more
    pairs outside the evaluation targets, not a mix that `teach` would refuse."""
    samples = fake_samples({"a": 30, "b": 12})
    mixed = [
        Sample(s.image, s.mask, "spleen" if i % 3 == 0 else "liver", origin=s.origin) for i, s in enumerate(samples)
    ]
    pairs, _ = lso.teach_pairs(mixed, lso.LSOConfig(folds=2, per_source=6), "a", 5)
    assert len(pairs) == 5 and {s.structure for s in pairs} == {"liver"}


def test_teach_lift_needs_the_fold_done_first(tmp_path):
    samples = fake_samples({"a": 20, "b": 12})
    with pytest.raises(IbisInputError, match="no results yet"):
        lso.teach_lift(samples, {}, lso.LSOConfig(folds=2), tmp_path, "a")
    with pytest.raises(IbisInputError, match="no such source"):
        lso.teach_lift(samples, {}, lso.LSOConfig(folds=2), tmp_path, "zzz")


def test_recipe_overrides_are_typed_and_unknown_fields_refused():
    from ibisagent.errors import IbisInputError
    from ibisagent.train.leave_source_out import train_overrides

    assert train_overrides(["mix_style=0.5", "dilations=1,2", "mirror=true", "hidden=32"]) == {
        "mix_style": 0.5,
        "dilations": (1, 2),
        "mirror": True,
        "hidden": 32,
    }
    for bad in (["nope=1"], ["hidden=wide"], ["mirror=maybe"], ["minutes=3"], ["mix_style"]):
        with pytest.raises(IbisInputError):
            train_overrides(bad)


def test_targets_are_split_by_whether_a_training_source_names_their_structure():
    """A target counts as named when some training pair of its fold has the same structure (case
    aside); a structure only its own source has is unnamed."""
    from dataclasses import replace

    samples = fake_samples({"a": 6, "b": 6, "c": 6})
    samples = [replace(s, structure="Spleen") if s.origin == "c" else s for s in samples]
    cfg = lso.LSOConfig(folds=3, per_source=2, train_per_source=0)
    fold_of, _, targets = lso.plan(samples, cfg)
    named = lso.named_in_training(samples, json.loads(json.dumps(lso.asdict(cfg))))
    assert set(named) == {s.id for s in targets}
    for s in targets:
        assert named[s.id] is (s.origin != "c"), (s.origin, fold_of)


def test_two_recipes_compare_target_by_target(tmp_path):
    """`eval compare A B` reads two leave-source-out folders: the paired IoU difference over the
    targets both have, from the fold files alone; an incomplete run is said to be so."""
    from typer.testing import CliRunner

    from ibisagent.cli.main import app

    cfg = lso.LSOConfig(folds=2, baselines=("centre",))
    for name, shift in (("a", 0.0), ("b", 0.1)):
        run = tmp_path / name
        run.mkdir()
        for fold, src in ((0, "x"), (1, "y")):
            items = {f"{src}{i}": 0.2 + 0.05 * i + shift for i in range(6)}
            rec = fold_record(fold, cfg, {"compact": items, "centre": {k: 0.1 for k in items}}, src)
            (run / f"fold_{fold}.json").write_text(json.dumps(rec))
    out = tmp_path / "rows.json"
    r = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = {(row["policy_a"], row["metric"]): row for row in json.loads(out.read_text())}
    assert set(rows) == {("compact", "iou"), ("centre", "iou")}
    assert rows["compact", "iou"]["n"] == 12 and rows["compact", "iou"]["diff"] == pytest.approx(0.1)
    assert rows["centre", "iou"]["diff"] == 0.0
    (tmp_path / "b" / "fold_1.json").unlink()
    r = CliRunner().invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 0 and "B:" in r.output


def test_teachable_sources_are_those_of_the_folds_with_pairs_left_to_teach():
    samples = fake_samples({"a": 20, "b": 12, "c": 8})  # c: 6 evaluation targets leave 2 pairs, too few
    cfg = lso.LSOConfig(folds=2, per_source=6)
    fold_of = lso.assign_folds(samples, 2)
    every = lso.teachable_sources(samples, cfg, 5, {0, 1})
    assert every == ["a", "b"]
    assert lso.teachable_sources(samples, cfg, 5, {fold_of["a"]}) == ["a"] + (
        ["b"] if fold_of["b"] == fold_of["a"] else []
    )


def test_summary_pairs_teaching_before_and_after_over_all_and_taught_structure_targets(tmp_path):
    cfg = lso.LSOConfig(folds=2, baselines=("centre",))
    rec = fold_record(0, cfg, {"compact": {"a1": 0.1, "a2": 0.2}, "centre": {"a1": 0.1, "a2": 0.1}}, "a")
    (tmp_path / "fold_0.json").write_text(json.dumps(rec))
    taught = {
        "source": "a",
        "fold": 0,
        "n": 2,
        "before": 0.15,
        "after": 0.45,
        "teach_minutes": 0.1,
        "other_sources": {"n": 1, "before": 0.5, "after": 0.5},
        "per_item": {
            "a1": {"before": 0.1, "after": 0.7, "taught_structure": True},
            "a2": {"before": 0.2, "after": 0.2, "taught_structure": False},
        },
    }
    (tmp_path / "teach_a.json").write_text(json.dumps(taught))
    t = lso.summarise(tmp_path)["teach"]
    assert t["all_targets"]["n"] == 2 and t["all_targets"]["diff"] == pytest.approx(0.3)
    assert t["taught_structure"]["n"] == 1 and t["taught_structure"]["mean_b"] == pytest.approx(0.7)
    assert "those of the taught structure: 0.100 -> 0.700" in (tmp_path / "summary.md").read_text()

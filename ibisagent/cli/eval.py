"""`ibisagent eval`: run policies over datasets, report on a run, compare two runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ibisagent.cli.common import (
    FreshOpt,
    LimitOpt,
    MaxStepsOpt,
    SplitOpt,
    StrategyOpt,
    ToolOpt,
    fail,
    run_guarded,
)

app = typer.Typer(
    name="eval",
    help="Evaluate policies (agents and baselines) on datasets; reports and run comparisons.",
    no_args_is_help=True,
)

# The shipped agent first, then the click simulator (an upper reference) and the text-free baselines
DEFAULT_POLICIES = ["compact", "oracle:0.9", "box", "centre", "random"]


@app.command("run")
def run_cmd(
    data: Annotated[
        list[str], typer.Option("--data", help="Dataset: a pairs.csv, its folder, or a folder of them (repeatable)")
    ],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help="Policy spec (repeatable): compact (the shipped agent), oracle[:IOU], box, centre, salient, "
            "random[:K], hf:PATH, openai:URL. "
            f"Default: {' '.join(DEFAULT_POLICIES)}",
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Run folder: run.json, results.jsonl, latency.jsonl, report.*")] = Path(
        "runs/eval"
    ),
    tool: ToolOpt = "litemedsam",
    strategy: StrategyOpt = "points+prior",
    max_steps: MaxStepsOpt = 20,
    seed: Annotated[int, typer.Option(help="Run seed (random baselines; episodes get seeds derived from it)")] = 0,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes (each loads its own tool); with a tool server (--tool http://...) "
            "threads: the episodes (and requests) in flight at once",
        ),
    ] = 1,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Torch threads per worker (default: CPUs / workers)")
    ] = None,
    limit: LimitOpt = None,
    split: SplitOpt = "all",
    queries: Annotated[
        str | None,
        typer.Option(
            help="Query kinds, comma-separated: referring, reasoning, refinement, closed (seeded templates; "
            "default: 'Segment the <target>.')"
        ),
    ] = None,
    negatives: Annotated[
        bool, typer.Option(help="Add absent-target samples with a yes/no question (needs --queries)")
    ] = False,
    fresh: FreshOpt = False,
    retry_errors: Annotated[bool, typer.Option(help="Redo episodes that failed in an earlier run")] = False,
    report: Annotated[bool, typer.Option(help="Write report.md / report.html when done")] = True,
) -> None:
    """Run every policy on every sample; resumable (rerun the same command to continue).

    Example: ibisagent eval run --data ibisagent/assets/demo --workers 2 --out runs/eval
    """
    run_guarded(
        _run, data, policy or DEFAULT_POLICIES, out, tool, strategy, max_steps, seed, workers, threads, limit, fresh,
        retry_errors, report, queries, negatives, split,
    )  # fmt: skip


def _run(
    data, policies, out, tool, strategy, max_steps, seed, workers, threads, limit, fresh, retry_errors, report, queries,
    negatives, split="all",
):  # fmt: skip
    from rich.console import Console

    from ibisagent.eval.harness import RunConfig, run_eval
    from ibisagent.eval.results import load_run

    cfg = RunConfig(
        data=list(data),
        policies=list(policies),
        tool=tool,
        tool_kwargs={"strategy": strategy} if tool.startswith("litemedsam") else {},
        max_steps=max_steps,
        seed=seed,
        workers=workers,
        threads=threads,
        limit=limit,
        retry_errors=retry_errors,
        queries=[q.strip() for q in (queries or "").split(",") if q.strip()],
        negatives=negatives,
        split=split,
    )
    from ibisagent.progress import progress_bar

    console = Console(stderr=True)
    try:
        with progress_bar(console=console) as bar:
            task = bar.add_task("episodes", total=None)
            run = run_eval(cfg, out, fresh=fresh, progress=lambda d, t: bar.update(task, completed=d, total=t))
    except KeyboardInterrupt:
        partial = load_run(out)
        fail(f"interrupted: {len(partial.rows)} of {partial.expected} episodes saved in {out}; rerun to resume", 130)
    if report:
        from ibisagent.eval.report import write_report

        summary = write_report(run)
        typer.echo(f"report: {out / 'report.html'} and {out / 'report.md'}")
        _plots_note()
    else:
        from ibisagent.eval.summary import summarize_run

        summary = summarize_run(run)
    print_summary(summary, run)


def print_summary(summary: dict, run) -> None:
    from rich.console import Console

    from ibisagent.cli.common import narrow_table
    from ibisagent.eval.report import f
    from ibisagent.eval.summary import completeness_note

    console = Console()
    note = completeness_note(run)
    if note:
        console.print(f"[bold yellow]{note}")
    title = f"{run.path}: {summary['episodes']} episodes, {summary['errors']} failed"
    table = narrow_table(title, ("policy", "n", "IoU [95% CI]", "Dice", "steps", "return", "NoC@85", "NoC@90", "s/ep"))
    for p, s in summary["policies"].items():
        lo, hi = s["iou_ci"]
        table.add_row(
            p,
            str(s["n"]),
            f"{f(s['iou'])} [{f(lo)}, {f(hi)}]",
            f(s["dice"]),
            f(s["steps"], 2),
            f(s.get("return"), 3),
            f(s["noc"].get("85"), 2),
            f(s["noc"].get("90"), 2),
            f(s["latency"]["episode_s"], 2),
        )
    console.print(table)


@app.command("report")
def report_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder written by `ibisagent eval run`")],
    out: Annotated[Path | None, typer.Option(help="Where to write the report (default: the run folder)")] = None,
    gallery_policy: Annotated[
        str | None, typer.Option(help="Only this policy in the gallery (default: every policy)")
    ] = None,
    gallery_n: Annotated[int, typer.Option(min=0, max=50, help="Best and worst episodes shown per policy")] = 3,
) -> None:
    """Write report.md and a self-contained report.html (tables, plots, gallery) for a run.

    Example: ibisagent eval report runs/eval
    """
    run_guarded(_report, run, out, gallery_policy, gallery_n)


def _report(run_path, out, gallery_policy, gallery_n):
    from ibisagent.eval.report import write_report
    from ibisagent.eval.results import load_run

    run = load_run(run_path)
    summary = write_report(run, out, gallery_policy, gallery_n)
    dest = out or run.path
    typer.echo(f"report: {dest / 'report.html'} and {dest / 'report.md'}")
    _plots_note()
    print_summary(summary, run)


def _plots_note() -> None:
    from ibisagent.eval.plots import have_matplotlib

    if not have_matplotlib():
        typer.echo("plots: skipped, matplotlib is not installed (pip install 'ibisagent[eval]')")


@app.command("compare")
def compare_cmd(
    run_a: Annotated[Path, typer.Argument(help="Run folder A (the reference)")],
    run_b: Annotated[Path, typer.Argument(help="Run folder B (may be the same folder with other policies)")],
    policy_a: Annotated[str | None, typer.Option(help="Policy of A (default: every policy in both runs)")] = None,
    policy_b: Annotated[str | None, typer.Option(help="Policy of B (default: the same as A)")] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="iou, iou1 (after the first action), dice, noc85, noc90, steps, return (the paper's reward per action); repeatable"
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option(min=100, max=100000, help="Bootstrap resamples")] = 2000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the rows as JSON here")] = None,
) -> None:
    """Paired difference B - A per metric with a 95% bootstrap interval, over the samples both finished.

    Runs of `eval run`, or of `eval lso` (two recipes on the same folds and targets; IoU only).

    Example: ibisagent eval compare runs/base runs/new --policy-a oracle:0.9
    """
    run_guarded(_compare, run_a, run_b, policy_a, policy_b, metric, n_boot, json_out)


def _compare(run_a, run_b, policy_a, policy_b, metric, n_boot, json_out):
    from rich.console import Console

    from ibisagent.cli.common import narrow_table
    from ibisagent.eval.compare import compare_runs
    from ibisagent.eval.report import f, json_safe
    from ibisagent.eval.results import load_run
    from ibisagent.eval.summary import completeness_note
    from ibisagent.io.images import atomic_write_bytes

    a, b = load_run(run_a), load_run(run_b)
    default = ("iou", "dice", "noc85", "steps")
    if "metrics" in a.meta or "metrics" in b.meta:  # a leave-source-out run keeps only each target's IoU
        default = tuple(
            m for m in default if m in a.meta.get("metrics", default) and m in b.meta.get("metrics", default)
        )
    rows = compare_runs(a, b, policy_a, policy_b, tuple(metric or default), n_boot)
    console = Console()
    for run, name in ((a, "A"), (b, "B")):
        note = completeness_note(run)
        if note:
            console.print(f"[bold yellow]{name}: {note}")
    title = f"B - A   (A = {a.path}, B = {b.path}); 95% bootstrap interval, {n_boot} resamples"
    table = narrow_table(title, ("policy A", "policy B", "metric", "n", "A", "B", "B - A", "95% CI", "better"), left=3)
    for r in rows:
        table.add_row(
            r["policy_a"],
            r["policy_b"],
            r["metric"],
            str(r["n"]),
            f(r["mean_a"]),
            f(r["mean_b"]),
            f"{r['diff']:+.3f}" if r["n"] else "–",
            f"[{f(r['low'])}, {f(r['high'])}]",
            r["better"],
        )
    console.print(table)
    if json_out:
        atomic_write_bytes(json_out, (json.dumps(json_safe(rows), indent=1) + "\n").encode())


@app.command("lso")
def lso_cmd(
    data: Annotated[
        list[Path], typer.Argument(help="Datasets: pairs.csv files or folders of them; each folder is a source")
    ],
    out: Annotated[
        Path, typer.Option(help="Run folder: fold_K.json per fold, fold_K/ weights, summary.json/.md")
    ] = Path("runs/lso"),
    folds: Annotated[int, typer.Option(min=2, help="Folds; sources are dealt into them balanced by pair count")] = 5,
    train_epochs: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="SFT passes over each fold's training targets (the shipped recipe's train compact --epochs)",
        ),
    ] = 4.0,
    train_steps: Annotated[
        int, typer.Option(min=0, help="A fixed number of SFT steps per fold instead of --train-epochs (0: off)")
    ] = 0,
    minutes: Annotated[float, typer.Option(min=0.1, help="Ceiling on each fold's SFT minutes")] = 30.0,
    per_source: Annotated[int, typer.Option(min=1, help="Evaluation targets per held-out source")] = 10,
    train_per_source: Annotated[
        int, typer.Option(min=0, help="Training images per source (0 = all; fewer = a shorter cold embedding cache)")
    ] = 16,
    fold: Annotated[list[int] | None, typer.Option(help="Run only this fold (repeatable); default all")] = None,
    max_steps: MaxStepsOpt = 20,
    seed: Annotated[int, typer.Option(help="Seed of the target choice and of training")] = 0,
    baseline: Annotated[
        list[str] | None, typer.Option(help="Baselines on the same targets (repeatable; default centre salient box)")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache (default: the train commands' cache)")] = None,
    teach_source: Annotated[
        list[str] | None,
        typer.Option(
            help="After the folds: teach each such source's fold policy from a few of its pairs (repeatable; "
            "'all': every source of the folds run here with enough pairs)"
        ),
    ] = None,
    teach_pairs: Annotated[int, typer.Option(min=2, help="Pairs taught per --teach-source")] = 5,
    teach_minutes: Annotated[float, typer.Option(min=0.05, help="Teaching minutes per --teach-source")] = 3.0,
    teach_set: Annotated[
        list[str] | None,
        typer.Option(
            "--teach-set",
            metavar="FIELD=VALUE",
            help="Change one field of the teaching recipe (TeachConfig) for --teach-source (repeatable)",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=VALUE",
            help="Change one field of the SFT recipe in every fold, to select a recipe on sources it never saw "
            "(repeatable; e.g. --set mix_style=0.5)",
        ),
    ] = None,
) -> None:
    """Leave-source-out: per fold, train the compact policy without the fold's sources and play it
    from the query alone on them, beside the baselines; resumable (rerun to continue).

    About 20 minutes on 2 cores with bfloat16 and a warm embedding cache at the defaults (per fold
    about 2.5 min of SFT, 4 epochs of about 1,050 targets, and 1 min of episodes); the first run embeds the images it needs
    once (cached; about 1,000 images).

    Example: ibisagent eval lso DATA --out runs/lso   (DATA: pairs.csv folders, see README)
    """
    run_guarded(
        _lso, data, out, folds, train_epochs, train_steps, minutes, per_source, train_per_source, fold, max_steps, seed, baseline, cache_dir,
        teach_source or [], teach_pairs, teach_minutes, set_ or [], teach_set or [],
    )  # fmt: skip


def _lso(
    data, out, folds, train_epochs, train_steps, minutes, per_source, train_per_source, fold, max_steps, seed, baseline, cache_dir,
    teach_sources, teach_pairs, teach_minutes, overrides, teach_overrides,
):  # fmt: skip
    from rich.console import Console

    from ibisagent.data.pairs import collect_pairs
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.train import DEFAULT_CACHE_DIR
    from ibisagent.train.compact.teach import TeachConfig
    from ibisagent.train.embedding_cache import embed_images
    from ibisagent.train.leave_source_out import (
        BASELINES,
        LSOConfig,
        config_overrides,
        images_needed,
        run_lso,
        summarise,
        teach_lift,
        teachable_sources,
        train_overrides,
    )
    from ibisagent.train.leave_source_out import teach_pairs as teach_pairs_of
    from ibisagent.train.tool.pipeline import _bar_run

    console = Console(stderr=True)
    cfg = LSOConfig(
        folds=folds,
        train_epochs=train_epochs,
        train_steps=train_steps,
        minutes=minutes,
        per_source=per_source,
        train_per_source=train_per_source,
        max_steps=max_steps,
        seed=seed,
        baselines=tuple(baseline or BASELINES),
        train=train_overrides(overrides),
    )
    teach_cfg = TeachConfig(
        minutes=teach_minutes,
        min_pairs=teach_pairs,
        seed=seed,
        **config_overrides(TeachConfig, teach_overrides, fixed=("minutes", "min_pairs", "seed"), option="--teach-set"),
    )
    samples = collect_pairs(list(data))
    if "all" in teach_sources:
        wanted = set(fold) if fold else set(range(cfg.folds))
        teach_sources = [s for s in teach_sources if s != "all"] + teachable_sources(samples, cfg, teach_pairs, wanted)
    images = images_needed(samples, cfg)
    for src in teach_sources:
        images += [s.image for s in teach_pairs_of(samples, cfg, src, teach_pairs)[0]]
    images = sorted(set(images))
    emb_files = _bar_run(
        "embedding images (once, cached)",
        len(images),
        lambda adv: embed_images(LiteMedSAMTool(weights="original"), images, cache_dir or DEFAULT_CACHE_DIR, adv),
    )
    summary = run_lso(samples, emb_files, cfg, out, folds=fold, log=console.print)
    for src in teach_sources:
        if (out / f"teach_{src}.json").exists():
            console.print(f"teach {src}: done already")
            continue
        teach_lift(samples, emb_files, cfg, out, src, teach_cfg, log=console.print)
    if teach_sources:
        summary = summarise(out, samples)
    typer.echo((out / "summary.md").read_text())
    typer.echo(f"summary: {out / 'summary.json'} (folds done: {summary['folds_done']})")


heldout_app = typer.Typer(
    help="The held-out split of train compact / train tool (15% of the images of the training sources), "
    "for any weights. For sources never trained on: ibisagent eval lso.",
    no_args_is_help=True,
)
app.add_typer(heldout_app, name="heldout")
DataArg = Annotated[list[Path], typer.Argument(help="Datasets as given to train compact / train tool")]
HeldoutOpt = Annotated[int, typer.Option(min=1, max=99, help="Percent of images held out (as in training)")]
CacheOpt = Annotated[Path | None, typer.Option(help="Embedding cache (default: the train commands' cache)")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON here")]


@heldout_app.command("compact")
def heldout_compact_cmd(
    data: DataArg,
    weights: Annotated[
        list[str] | None,
        typer.Option(help="Compact weights (repeatable; each after the first is compared with it, paired by target)"),
    ] = None,
    heldout: HeldoutOpt = 15,
    split: Annotated[
        str, typer.Option(help="heldout: the split train compact reports; val: the validation images after it")
    ] = "heldout",
    val: Annotated[int, typer.Option(min=1, max=99, help="Percent of images in the validation split")] = 10,
    max_steps: MaxStepsOpt = 20,
    present_only: Annotated[bool, typer.Option(help="Only episodes on present targets")] = False,
    absent_only: Annotated[bool, typer.Option(help="Only absent-target and out-of-domain questions")] = False,
    lookahead: Annotated[int | None, typer.Option(help="Candidate clicks per sign (default: the policy's)")] = None,
    min_gain: Annotated[float | None, typer.Option(help="The policy's stop rule (default: its own)")] = None,
    click_margin: Annotated[float | None, typer.Option(help="The policy's click margin (default: its own)")] = None,
    guess_floor: Annotated[float | None, typer.Option(help="The policy's best-guess floor (default: its own)")] = None,
    reference_belief: Annotated[
        bool, typer.Option(help="The reference mask as the belief map: the ceiling of a better belief net")
    ] = False,
    cache_dir: CacheOpt = None,
    embed: Annotated[bool, typer.Option(help="Embed the split's uncached images first")] = False,
    json_out: JsonOpt = None,
) -> None:
    """Compact-policy episodes from the query alone on the held-out split: mean IoU per category,
    absent-target "no" share, out-of-domain queries; one JSON line per weights file.

    Example: ibisagent eval heldout compact DATA --weights ibisagent/policies/weights/compact_policy.pt
    """
    given = {"lookahead": lookahead, "min_gain": min_gain, "click_margin": click_margin, "guess_floor": guess_floor}
    run_guarded(
        _heldout_compact, data, weights, heldout, split, val, max_steps, present_only, absent_only,
        {k: v for k, v in given.items() if v is not None}, reference_belief, cache_dir, embed, json_out,
    )  # fmt: skip


def _heldout_compact(
    data, weights, heldout, split, val, max_steps, present_only, absent_only, kwargs, reference_belief, cache_dir,
    embed, json_out,
):  # fmt: skip
    from ibisagent.errors import IbisInputError
    from ibisagent.io.images import atomic_write_bytes
    from ibisagent.policies.belief_net import WEIGHTS
    from ibisagent.train.heldout import heldout_compact, heldout_samples

    if present_only and absent_only:
        raise IbisInputError("--present-only", "give at most one of --present-only and --absent-only")
    held, emb_files = heldout_samples(data, heldout, split, val, cache_dir, embed)
    typer.echo(f"{len(held)} {split} pairs ({len(emb_files)} images with cached embeddings)", err=True)
    lines = []
    for line in heldout_compact(
        held, emb_files, weights or [str(WEIGHTS)], max_steps, not absent_only, not present_only, kwargs,
        reference_belief,
    ):  # fmt: skip
        lines.append(line)
        typer.echo(json.dumps(line))
    if json_out:
        atomic_write_bytes(json_out, json.dumps(lines, indent=1).encode())


@heldout_app.command("tool")
def heldout_tool_cmd(
    data: DataArg,
    config: Annotated[
        list[str] | None,
        typer.Option(help="weights:strategy (repeatable; default original:points+prior clicks:points+prior)"),
    ] = None,
    max_clicks: Annotated[int, typer.Option(min=1, max=50, help="Simulated clicks per target")] = 10,
    heldout: HeldoutOpt = 15,
    components: Annotated[
        str, typer.Option(help="all, or only targets whose mask is one region (single) or several (multi)")
    ] = "all",
    cache_dir: CacheOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """The reference click simulator against tool configurations on the held-out split: IoU after
    1/3/5/10 clicks, NoC@80/85/90, GT-box IoU, share of clicks honoured.

    Example: ibisagent eval heldout tool DATA --config clicks:box+points+prior --max-clicks 20
    """
    run_guarded(_heldout_tool, data, config, max_clicks, heldout, components, cache_dir, json_out)


def _heldout_tool(data, configs, max_clicks, heldout, components, cache_dir, json_out):
    from ibisagent.io.images import atomic_write_bytes
    from ibisagent.train.heldout import heldout_samples, heldout_tool
    from ibisagent.train.tool.pipeline import format_share

    held, emb_files = heldout_samples(data, heldout, cache_dir=cache_dir)
    typer.echo(
        f"{len(held)} held-out pairs ({len(emb_files)} images with cached embeddings), up to {max_clicks} clicks"
    )
    typer.echo(
        f"{'weights:strategy':<28}{'IoU@1':>7}{'IoU@3':>7}{'IoU@5':>7}{'IoU@10':>7}{'NoC80':>7}{'NoC85':>7}"
        f"{'NoC90':>7}{'box':>7}{'+ok':>6}{'-ok':>6}"
    )
    results = {}
    for cfg, s in heldout_tool(
        held, emb_files, configs or ["original:points+prior", "clicks:points+prior"], max_clicks, components
    ):
        m, n, h = s["mean_iou_at"], s["noc"], s["clicks_honoured"]
        at = [f"{m.get(str(k), float('nan')):7.3f}" for k in (1, 3, 5, 10)]
        typer.echo(
            f"{cfg:<28}{''.join(at)}{n['80']:7.2f}{n['85']:7.2f}{n['90']:7.2f}{s['box_iou']:7.3f}"
            f"{format_share(h['positive']):>6}{format_share(h['negative']):>6}"
        )
        results[cfg] = s
        if json_out:
            atomic_write_bytes(json_out, json.dumps(results, indent=1).encode())

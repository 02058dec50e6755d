#!/usr/bin/env python
"""Regenerate the tables of docs/results.md from run reports.

    .venv/bin/python scripts/results_tables.py                      # print the tables of the shipped reports
    .venv/bin/python scripts/results_tables.py --write docs/results.md \\
        --simulate runs/sim/summary.json --eval runs/eval            # rewrite the generated parts in place

Sources:
- the shipped tool's report (`ibisagent/tools/weights/report.json`, written by `ibisagent train tool
  DATA --install`): IoU after k simulated clicks, NoC, clicks honoured, per modality;
- the shipped agent's report (`ibisagent/policies/weights/compact_report.json`, written by
  `ibisagent train compact DATA --install`): mean IoU from the text query, per category and per
  modality, absent targets, unknown queries, and the text-free baselines on the same targets;
- optionally `ibisagent simulate` summaries (`--simulate OUT/summary.json`) and `ibisagent eval run`
  folders (`--eval RUN`), e.g. on the bundled demo.

With --write, the text between `<!-- tables:NAME -->` and `<!-- /tables:NAME -->` in the file is
replaced (NAME: shipped, or runs for the --simulate/--eval tables); the rest is left as written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL_REPORT = ROOT / "ibisagent" / "tools" / "weights" / "report.json"
AGENT_REPORT = ROOT / "ibisagent" / "policies" / "weights" / "compact_report.json"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def f3(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def f2(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def click_rows(name: str, s: dict, ks: list[str]) -> list:
    return [
        name,
        s["n"],
        *[f3(s["mean_iou_at"].get(k)) for k in ks],
        *[f2(s["noc"].get(t)) for t in ("80", "85", "90")],
    ]


def tool_section(report: dict) -> str:
    res = report["results"]
    cap = report.get("eval_clicks", 20)
    ks = [k for k in ("1", "3", "5", "10", "20") if int(k) <= cap]
    header = ["weights", "n", *[f"IoU@{k}" for k in ks], "NoC@80", "NoC@85", "NoC@90"]
    rows = []
    for name, s in res.items():
        label = {"clicks": "click-trained (shipped)", "original": "LiteMedSAM original"}.get(name, name)
        rows.append(click_rows(label, s, ks))
    out = [
        "### Tool under simulated clicks: held-out images of the training sources",
        "",
        f"{report['heldout_pairs']} image/mask pairs on images the tool never saw in training (the training "
        f"sources, split by image); the reference click simulator, up to {cap} clicks, NoC capped at {cap}.",
        "",
        table(header, rows),
        "",
    ]
    shipped = res.get("clicks")
    if shipped:
        other = {k: v for k, v in res.items() if k != "clicks"}
        h = shipped.get("clicks_honoured", {})
        line = (
            f"Reference box prompt (the target's bounding box, one prompt): {f3(shipped.get('box_iou'))}. "
            f"Clicks honoured (the next mask agrees with the click at its pixel): positive {pct(h.get('positive'))}, "
            f"negative {pct(h.get('negative'))}"
        )
        if "original" in other:
            ho = other["original"].get("clicks_honoured", {})
            line += f" (original weights: {pct(ho.get('positive'))}, {pct(ho.get('negative'))})"
        out += [line + ".", "", "Per modality (shipped weights):", ""]
        rows = [click_rows(m, s, ks) for m, s in sorted(shipped["per_modality"].items())]
        out += [table(["modality", "n", *[f"IoU@{k}" for k in ks], "NoC@80", "NoC@85", "NoC@90"], rows), ""]
    return "\n".join(out)


def agent_section(report: dict) -> str:
    res = report["results"]
    installed = report.get("installed", "sft+rl")
    stages = [s for s in ("sft+rl", "sft") if s in res]
    labels = {
        "sft+rl": "compact, SFT + GRPO",
        "sft": "compact, SFT only",
        "centre": "centre click (text-free)",
        "salient": "largest salient region (text-free)",
    }
    cats = ["organ", "lesion", "anatomy"]
    header = ["policy", "n", "mean IoU", *[f"{c} ({res[stages[0]]['per_category'][c]['n']})" for c in cats]]
    header += ["steps", "no click"]
    rows = []
    for name in [*stages, *[k for k in res if k not in stages]]:
        s = res[name]
        label = labels.get(name, name) + (" (shipped)" if name == installed else "")
        per = s.get("per_category", {})
        rows.append(
            [label, s["n"], f3(s["mean_iou"]), *[f3(per.get(c, {}).get("mean_iou")) for c in cats]]
            + [f2(s.get("mean_steps")), pct(s.get("no_click"))]
        )
    ship = res[installed]
    out = [
        "### Agent from the text query: held-out images of the training sources",
        "",
        f"{report['heldout_pairs']} targets on images the policy never saw in training (the same split as the "
        'tool\'s); the query is the referring sentence ("Segment the <target>."), no reference mask is used; '
        "at most 20 actions.",
        "",
        table(header, rows),
        "",
    ]
    absent, unknown = ship.get("absent"), ship.get("unknown_queries")
    if absent:
        out.append(
            f'Absent targets (asked for a structure the image cannot show): answers "no" on '
            f"{pct(absent['stop_no_accuracy'])} of {absent['n']}."
        )
    if unknown:
        out.append(
            f"Queries naming nothing it was trained on (everyday objects, nonsense): marked as unknown (no mask, "
            f"or a best guess stated as low-confidence) on {pct(unknown.get('marked', unknown['no_click']))} of "
            f"{unknown['n']} (no click on {pct(unknown['no_click'])})."
        )
    pair = report.get("rl_vs_sft")
    if pair:
        verdict = "no difference shown" if pair["low"] <= 0 <= pair["high"] else "a difference"
        out.append(
            f"SFT + GRPO minus SFT, paired over the same targets: {pair['diff']:+.3f} "
            f"(95% bootstrap interval [{pair['low']:+.3f}, {pair['high']:+.3f}]: {verdict})."
        )
    out += ["", "Per category (shipped weights):", ""]
    rows = [[c, s["n"], f3(s["mean_iou"])] for c, s in sorted(ship["per_category"].items())]
    out += [table(["category", "n", "mean IoU"], rows), "", "Per modality (shipped weights):", ""]
    rows = [[m, s["n"], f3(s["mean_iou"])] for m, s in sorted(ship["per_modality"].items())]
    out += [table(["modality", "n", "mean IoU"], rows), ""]
    per_source: dict[str, list[float]] = {}
    for key, iou in ship.get("per_item", {}).items():  # keys: SOURCE/IMAGE/TARGET
        per_source.setdefault(key.split("/", 1)[0], []).append(iou)
    if per_source:
        rows = [[src, len(v), f3(sum(v) / len(v))] for src, v in sorted(per_source.items())]
        out += ["Per dataset (shipped weights; the dataset's folder name in the collection):", ""]
        out += [table(["dataset", "n", "mean IoU"], rows), ""]
    return "\n".join(out)


def simulate_section(path: Path) -> str:
    s = json.loads(path.read_text())
    ks = list(s["mean_iou_at"])
    header = ["modality", "n", *[f"IoU@{k}" for k in ks], "NoC@80", "NoC@85", "NoC@90"]
    rows = [click_rows(m, v, ks) for m, v in sorted(s["per_modality"].items())] + [click_rows("all", s, ks)]
    return "\n".join(
        [
            f"### `ibisagent simulate` on {s.get('pairs', path.parent)} ({s.get('tool', '')}, "
            f"up to {s.get('max_clicks')} clicks)",
            "",
            table(header, rows),
            "",
        ]
    )


def eval_section(run_dir: Path) -> str:
    from ibisagent.eval.results import load_run
    from ibisagent.eval.summary import summarize_run

    run = load_run(run_dir)
    s = summarize_run(run)
    rows = []
    for p, v in s["policies"].items():
        lo, hi = v["iou_ci"]
        rows.append([p, v["n"], f"{f3(v['iou'])} [{f3(lo)}, {f3(hi)}]", f3(v["dice"]), f2(v["steps"])])
    data = ", ".join(run.meta.get("data", []))
    out = [
        f"### `ibisagent eval run` on {data} ({s['episodes']} episodes, {s['errors']} failed)",
        "",
        table(["policy", "n", "IoU [95% CI]", "Dice", "steps"], rows),
        "",
    ]
    return "\n".join(out)


def shipped_tables(tool_report: Path = TOOL_REPORT, agent_report: Path = AGENT_REPORT) -> str:
    return "\n".join(
        [tool_section(json.loads(tool_report.read_text())), agent_section(json.loads(agent_report.read_text()))]
    )


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- tables:{name} -->\n).*?(<!-- /tables:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"no <!-- tables:{name} --> ... <!-- /tables:{name} --> block in the file")
    return pattern.sub(lambda m: m.group(1) + "\n" + body.rstrip() + "\n\n" + m.group(2), text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tool-report", type=Path, default=TOOL_REPORT)
    ap.add_argument("--agent-report", type=Path, default=AGENT_REPORT)
    ap.add_argument("--simulate", type=Path, nargs="*", default=[], help="simulate summary.json files")
    ap.add_argument("--eval", type=Path, nargs="*", default=[], help="eval run folders")
    ap.add_argument("--write", type=Path, help="rewrite the generated blocks of this Markdown file")
    args = ap.parse_args(argv)
    shipped = shipped_tables(args.tool_report, args.agent_report)
    runs = "\n".join([*(simulate_section(p) for p in args.simulate), *(eval_section(p) for p in args.eval)])
    if not args.write:
        sys.stdout.write(shipped + ("\n" + runs if runs else ""))
        return
    text = replace_block(args.write.read_text(), "shipped", shipped)
    if runs:
        text = replace_block(text, "runs", runs)
    args.write.write_text(text)
    print(f"wrote {args.write}")


if __name__ == "__main__":
    main()

"""`report.md` and a self-contained `report.html` for an evaluation run.

The report is built once as a list of blocks (heading, paragraph, warning, table, image), then
rendered twice: Markdown (images saved under `report_assets/`) and HTML (images inline as
base64 PNG, no external files). An unfinished run gets a warning at the very top.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ibisagent.eval import paper, plots
from ibisagent.eval.results import RunData
from ibisagent.eval.summary import KS, completeness_note, summarize_run
from ibisagent.io.images import atomic_write_bytes

ASSETS = "report_assets"


@dataclass
class Block:
    kind: str  # "h1", "h2", "h3", "p", "warn", "table", "img"
    text: str = ""
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    png: bytes | None = None
    name: str = ""


def f(v, digits: int = 3, pct: bool = False) -> str:
    """A number for a table; '–' for missing or NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.{digits}f}"


def _policy_tables(summary: dict) -> list[Block]:
    pol = summary["policies"]
    text_rows, inter_rows, lat_rows = [], [], []
    for p, s in pol.items():
        lo, hi = s["iou_ci"]
        ans = s["answers"]
        text_rows.append(
            [
                p,
                str(s["n"]),
                str(s["errors"]),
                f"{f(s['iou'])} [{f(lo)}, {f(hi)}]",
                f(s["dice"]),
                f(s["precision"]),
                f(s["recall"]),
                f(s["steps"], 2),
                f(s["self_stop_rate"], pct=True),
                f(s["stop_accuracy"], pct=True),
                f(s["format_error_rate"], pct=True),
                f"{f(ans['accuracy'], pct=True)} (n={ans['n']})",
            ]
        )
        inter_rows.append(
            [p, *[f(s["mean_iou_at"].get(str(k))) for k in KS], *[f(s["noc"].get(t), 2) for t in ("80", "85", "90")]]
        )
        lat = s["latency"]
        lat_rows.append([p, *[f(lat[k], 3) for k in ("policy_s", "encoder_s", "decoder_s", "episode_s")]])
    return [
        Block("h2", "Text-driven segmentation"),
        Block(
            "p",
            "Final-mask scores per policy (means over finished episodes; IoU with a 95% bootstrap interval). "
            "Self-stop: episodes ended by the policy's own stop action. Stop accuracy: of those, the share with "
            "final IoU >= 0.80. Answer accuracy counts only samples with a yes/no expected answer.",
        ),
        Block(
            "table",
            header=[
                "policy",
                "n",
                "errors",
                "IoU [95% CI]",
                "Dice",
                "precision",
                "recall",
                "steps",
                "self-stop",
                "stop acc.",
                "format errors / step",
                "yes/no answer acc.",
            ],
            rows=text_rows,
        ),
        Block("h2", "Interactive segmentation"),
        Block(
            "p",
            f"Mean IoU after k clicks (an episode that stopped keeps its last IoU) and mean number of clicks "
            f"to reach IoU 0.80 / 0.85 / 0.90 ({summary['max_steps']} when never reached). A box prompt "
            "counts as one interaction.",
        ),
        Block(
            "table",
            header=["policy", *[f"IoU@{k}" for k in KS], "NoC@80", "NoC@85", "NoC@90"],
            rows=inter_rows,
        ),
        Block("h2", "Latency (seconds per episode, means)"),
        Block(
            "p",
            "The encoder runs once per image and is shared by all policies of that sample; "
            "decoder time is this policy's tool calls; episode time includes everything.",
        ),
        Block("table", header=["policy", "policy time", "encoder", "decoder", "episode"], rows=lat_rows),
    ]


def _group_table(summary: dict, field: str, title: str) -> list[Block]:
    pol = summary["policies"]
    groups = sorted({g for s in pol.values() for g in s[field]})
    rows = []
    for g in groups:
        cells = [g]
        for s in pol.values():
            fig = s[field].get(g)
            cells.append(
                "–" if fig is None else f"{f(fig['iou'])} / {f(fig['dice'])} / {f(fig['noc85'], 1)} (n={fig['n']})"
            )
        rows.append(cells)
    return [
        Block("h2", title),
        Block("p", "Each cell: mean IoU / mean Dice / mean NoC@85 (episodes)."),
        Block("table", header=[field.replace("per_", ""), *pol], rows=rows),
    ]


def _paper_blocks(summary: dict, run: RunData) -> list[Block]:
    ours = [
        [p, f"{100 * s['iou']:.2f} / {100 * s['dice']:.2f}" if s["n"] else "–", str(s["n"])]
        for p, s in summary["policies"].items()
    ]
    data = ", ".join(run.meta.get("data", []))
    return [
        Block("h2", "The paper's Table 1, beside this run"),
        Block(
            "warn",
            "The first table holds the PAPER's figures on the paper's benchmarks (not reproduced here). The second "
            f"holds THIS RUN's figures on {data}: a different benchmark, so the two are not directly comparable.",
        ),
        Block("h3", f"Paper (source: {paper.SOURCE}); IoU / Dice, %"),
        Block(
            "table",
            header=["benchmark", "IBISAgent (paper)", "best medical MLLM", "its IoU / Dice"],
            rows=paper.table1_rows(),
        ),
        Block("h3", "This run; IoU / Dice, %"),
        Block("table", header=["policy", "IoU / Dice", "n"], rows=ours),
    ]


def _plot_blocks(run: RunData, summary: dict) -> list[Block]:
    if not plots.have_matplotlib():
        return [Block("h2", "Plots"), Block("warn", "matplotlib is not installed: pip install 'ibisagent[eval]'")]
    by_policy = {p: [r for r in run.rows_of(p) if not r.get("error")] for p in run.policies}
    ms = summary["max_steps"]
    return [
        Block("h2", "Plots"),
        Block("img", "IoU vs step", png=plots.iou_vs_step(by_policy, ms), name="iou_vs_step.png"),
        Block("img", "NoC@85 histogram", png=plots.noc_histogram(by_policy, ms), name="noc85_hist.png"),
        Block("img", "Per-modality mean IoU", png=plots.modality_bars(summary), name="modality_bars.png"),
    ]


def _gallery_blocks(run: RunData, policy: str, n: int) -> list[Block]:
    from ibisagent.eval.gallery import gallery
    from ibisagent.eval.harness import load_items

    try:
        items, keys, _ = load_items(run.meta)
        by_key = {k: sample for k, (sample, _) in zip(keys, items)}
    except Exception as exc:
        return [Block("h2", f"Gallery: {policy}"), Block("warn", f"dataset unavailable, no pictures ({exc})")]
    blocks = [
        Block("h2", f"Gallery: {policy}, best and worst episodes"),
        Block(
            "p",
            "Left: the final mask (green, yellow outline) with the clicks (green dot positive, red negative). Right: the reference (red).",
        ),
    ]
    safe_policy = "".join(c if c.isalnum() else "_" for c in policy)
    for i, (section, row, png, note) in enumerate(gallery(run.rows_of(policy), by_key, n)):
        title = f"{section}: {row['key']} ({row['modality']}), IoU {f(row['iou'])}, {row['steps']} steps, stop: {row['stop_reason']}"
        blocks.append(Block("h3", title))
        blocks.append(Block("p", f"Query: {row['query']}"))
        if png is not None:
            blocks.append(Block("img", title, png=png, name=f"gallery_{safe_policy}_{i:02d}.png"))
        else:
            blocks.append(Block("warn", note))
        steps = [f"{k + 1}. [{kind}] {text}" for k, (kind, text) in enumerate(zip(row["step_kinds"], row["reasoning"]))]
        if row.get("answer"):
            steps.append(f"Answer: {row['answer']}")
        blocks.append(Block("p", "\n".join(steps)))
    return blocks


def _error_blocks(run: RunData) -> list[Block]:
    errs = [r for r in run.rows if r.get("error")]
    skipped = run.meta.get("skipped_at_load", [])
    blocks = [Block("h2", f"Failures: {len(errs)} episodes, {len(skipped)} samples skipped at load")]
    if errs:
        blocks.append(
            Block(
                "table", header=["sample", "policy", "error"], rows=[[r["key"], r["policy"], r["error"]] for r in errs]
            )
        )
    if skipped:
        blocks.append(Block("table", header=["skipped at load"], rows=[[s] for s in skipped]))
    return blocks


def build_blocks(run: RunData, gallery_policy: str | None = None, gallery_n: int = 3) -> tuple[list[Block], dict]:
    summary = summarize_run(run)
    meta = run.meta
    blocks = [Block("h1", f"Evaluation report: {run.path.name}")]
    note = completeness_note(run)
    if note:
        blocks.append(Block("warn", note))
    blocks.append(
        Block(
            "table",
            header=["setting", "value"],
            rows=[
                ["data", ", ".join(meta.get("data", []))],
                ["samples", str(meta.get("n_samples"))],
                ["policies", ", ".join(run.policies)],
                ["tool", f"{meta.get('tool')} {json.dumps(meta.get('tool_kwargs') or {})}"],
                ["max steps", str(meta.get("max_steps"))],
                ["queries", ", ".join(meta.get("queries") or ["Segment the <target>."])],
                ["absent-target samples", "yes" if meta.get("negatives") else "no"],
                ["seed", str(meta.get("seed"))],
                ["episodes", f"{summary['episodes']} of {summary['expected']} ({summary['errors']} failed)"],
                ["status", str(meta.get("status"))],
            ],
        )
    )
    blocks += _policy_tables(summary)
    blocks += _group_table(summary, "per_modality", "Per modality")
    blocks += _group_table(summary, "per_target", "Per target")
    if run.meta.get("queries"):
        blocks += _group_table(summary, "per_kind", "Per query kind")
    blocks += _plot_blocks(run, summary)
    blocks += _paper_blocks(summary, run)
    # every policy's best and worst episodes (or the one asked for)
    for gp in [gallery_policy] if gallery_policy else [p for p in run.policies if run.rows_of(p)]:
        blocks += _gallery_blocks(run, gp, gallery_n)
    blocks += _error_blocks(run)
    return blocks, summary


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text.replace("\n", "  \n"))
        elif b.kind == "warn":
            out.append(f"> **Warning:** {b.text}")
        elif b.kind == "table":
            out.append("| " + " | ".join(map(_md_cell, b.header)) + " |")
            out[-1] += "\n|" + "---|" * len(b.header)
            out[-1] += "".join("\n| " + " | ".join(map(_md_cell, r)) + " |" for r in b.rows)
        elif b.kind == "img" and b.png is not None:
            out.append(f"![{b.text}]({ASSETS}/{b.name})")
    return "\n\n".join(out) + "\n"


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}"
    "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}td:first-child,th:first-child{text-align:left}"
    "th{background:#f2f2f2}.warn{background:#fff3cd;border:1px solid #e0c36b;padding:.6em;margin:1em 0}"
    "p{white-space:pre-line}img{max-width:100%}"
)


def to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style></head><body>"
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "warn":
            out.append(f"<div class='warn'><b>Warning:</b> {e(b.text)}</div>")
        elif b.kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "img" and b.png is not None:
            data = base64.b64encode(b.png).decode()
            out.append(f"<figure><img alt='{e(b.text)}' src='data:image/png;base64,{data}'></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def json_safe(obj):
    """NaN -> None throughout, so the JSON is valid for strict readers."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_report(
    run: RunData, out: str | Path | None = None, gallery_policy: str | None = None, gallery_n: int = 3
) -> dict:
    """Write report.md, report.html, report_assets/ and summary.json into `out` (default: the run
    folder); returns the summary."""
    out = Path(out) if out is not None else run.path
    if gallery_policy is not None and gallery_policy not in run.policies:
        from ibisagent.errors import IbisInputError

        raise IbisInputError(gallery_policy, f"not a policy of this run ({', '.join(run.policies)})")
    blocks, summary = build_blocks(run, gallery_policy, gallery_n)
    for b in blocks:
        if b.kind == "img" and b.png is not None:
            atomic_write_bytes(out / ASSETS / b.name, b.png)
    atomic_write_bytes(out / "report.md", to_markdown(blocks).encode())
    atomic_write_bytes(out / "report.html", to_html(blocks, f"ibisagent evaluation: {run.path.name}").encode())
    atomic_write_bytes(out / "summary.json", (json.dumps(json_safe(summary), indent=1) + "\n").encode())
    return summary

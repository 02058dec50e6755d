"""Report figures as PNG bytes (matplotlib, Agg backend; install the `eval` extra).

Each function takes the run summary (`summary.summarize_run`) or rows and returns PNG bytes,
or None when matplotlib is missing (the report then says how to get the plots).
"""

from __future__ import annotations

import io

import numpy as np

from ibisagent.metrics import iou_at, noc


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # metadata=None drops the software/date stamps, so the same figures give the same bytes
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def iou_vs_step(rows_by_policy: dict[str, list[dict]], max_steps: int) -> bytes | None:
    """Mean IoU after k interactions (k = 1..max_steps), one line per policy."""
    if not have_matplotlib():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ks = np.arange(1, max_steps + 1)
    for policy, rows in rows_by_policy.items():
        curves = [r["ious"] for r in rows]
        if curves:
            ax.plot(ks, [np.mean([iou_at(c, k) for c in curves]) for k in ks], marker=".", label=policy)
    ax.set(xlabel="clicks (a box prompt counts as one)", ylabel="mean IoU", ylim=(0, 1), title="IoU vs step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def noc_histogram(rows_by_policy: dict[str, list[dict]], max_steps: int, threshold: float = 0.85) -> bytes | None:
    """Histogram of clicks to reach IoU >= threshold; episodes that never do sit at max_steps."""
    if not have_matplotlib():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.arange(0.5, max_steps + 1.5)
    data = {p: [noc(r["ious"], threshold, max_steps) for r in rows] for p, rows in rows_by_policy.items() if rows}
    if data:
        ax.hist(list(data.values()), bins=bins, label=list(data), histtype="bar")
    ax.set(
        xlabel=f"NoC@{round(threshold * 100)} ({max_steps} = never reached)",
        ylabel="episodes",
        title=f"Clicks to IoU {threshold:.2f}",
    )
    ax.legend(fontsize=8)
    return _png(fig)


def modality_bars(summary: dict) -> bytes | None:
    """Mean IoU per modality, grouped bars per policy."""
    if not have_matplotlib():
        return None
    plt = _pyplot()
    policies = summary["policies"]
    mods = sorted({m for s in policies.values() for m in s["per_modality"]})
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(mods) + 2), 3.6))
    width = 0.8 / max(1, len(policies))
    x = np.arange(len(mods))
    for i, (p, s) in enumerate(policies.items()):
        vals = [s["per_modality"].get(m, {}).get("iou", np.nan) for m in mods]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=p)
    ax.set_xticks(x, mods, rotation=30, ha="right")
    ax.set(ylabel="mean final IoU", ylim=(0, 1), title="Per modality")
    ax.legend(fontsize=8)
    return _png(fig)

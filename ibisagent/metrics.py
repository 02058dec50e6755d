"""Segmentation metrics, the only place they are computed.

Masks are H x W bool arrays (True = target). Conventions for empty masks: IoU and Dice of two
empty masks are 1.0 (nothing to find, nothing found); precision of an empty prediction is 1.0 and
recall against an empty target is 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NOC_THRESHOLDS = (0.80, 0.85, 0.90)


def _counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    tp = int(np.count_nonzero(pred & gt))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(gt)) - tp


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    tp, fp, fn = _counts(pred, gt)
    return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    tp, fp, fn = _counts(pred, gt)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    tp, fp, _ = _counts(pred, gt)
    return 1.0 if tp + fp == 0 else tp / (tp + fp)


def recall(pred: np.ndarray, gt: np.ndarray) -> float:
    tp, _, fn = _counts(pred, gt)
    return 1.0 if tp + fn == 0 else tp / (tp + fn)


def mask_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """IoU, Dice, precision and recall in one pass."""
    tp, fp, fn = _counts(pred, gt)
    if tp + fp + fn == 0:
        return {"iou": 1.0, "dice": 1.0, "precision": 1.0, "recall": 1.0}
    return {
        "iou": tp / (tp + fp + fn),
        "dice": 2 * tp / (2 * tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
    }


def noc(ious_per_click: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach IoU >= threshold; `max_clicks` when never reached (the
    interactive-segmentation convention). ious_per_click[k] is the IoU after k + 1 clicks."""
    for k, v in enumerate(ious_per_click[:max_clicks]):
        if v >= threshold:
            return k + 1
    return max_clicks


def iou_at(ious_per_click: Sequence[float], k: int) -> float:
    """IoU after k clicks; an episode that stopped earlier keeps its last IoU (0 if no click)."""
    if not ious_per_click:
        return 0.0
    return float(ious_per_click[min(k, len(ious_per_click)) - 1])


def summarize_curves(curves: Sequence[Sequence[float]], ks=(1, 3, 5, 10, 20), max_clicks: int = 20) -> dict:
    """Mean IoU after k clicks and mean NoC@80/85/90 over episodes' IoU-per-click curves."""
    n = len(curves)
    if n == 0:
        return {"n": 0, "mean_iou_at": {}, "noc": {}}
    return {
        "n": n,
        "mean_iou_at": {str(k): float(np.mean([iou_at(c, k) for c in curves])) for k in ks},
        "noc": {str(round(t * 100)): float(np.mean([noc(c, t, max_clicks) for c in curves])) for t in NOC_THRESHOLDS},
    }


def click_honoured(mask: np.ndarray, click: Sequence[int]) -> bool:
    """Whether the mask after a click agrees with it at the clicked pixel: click (x, y, label)
    in pixels, label 1 = target (pixel inside the mask), 0 = background (pixel outside)."""
    x, y, label = int(click[0]), int(click[1]), int(click[2])
    return bool(mask[y, x]) == (label == 1)


def honoured_shares(rows: Sequence[dict]) -> dict[str, float | None]:
    """Share of positive and of negative clicks honoured, over rows holding `clicks` [(x, y,
    label)] and `honoured` [bool] (as `eval.interactive.simulate_sample` writes them). A tool
    that ignores negative clicks shows it here long before it shows in mean IoU."""
    out = {}
    for name, label in (("positive", 1), ("negative", 0)):
        flags = [h for r in rows for c, h in zip(r.get("clicks", []), r.get("honoured", [])) if c[2] == label]
        out[name] = float(np.mean(flags)) if flags else None
    return out


# -- text-driven use: stopping and answers ---------------------------------------------------
GOOD_STOP_IOU = 0.80  # the released click simulator's goal; a stop at or above it is a good stop


def stop_scores(
    stop_reasons: Sequence[str | None], final_ious: Sequence[float], threshold: float = GOOD_STOP_IOU
) -> dict[str, float]:
    """How well episodes end. `self_stop_rate`: fraction ended by the policy's own stop action
    (not max steps, an invalid action or a repeat); `stop_accuracy`: among those, the fraction
    whose final IoU >= `threshold` (a stop at the right time). NaN when there is nothing to count."""
    stops = [v for r, v in zip(stop_reasons, final_ious) if r == "stop"]
    n = len(stop_reasons)
    return {
        "self_stop_rate": len(stops) / n if n else float("nan"),
        "stop_accuracy": float(np.mean([v >= threshold for v in stops])) if stops else float("nan"),
    }


def yes_no(text: str | None) -> str | None:
    """ "yes" or "no" from the first yes/no word of an answer (case-insensitive), else None.
    A leading "No <thing> found" counts as no."""
    import re

    if not text:
        return None
    m = re.search(r"\b(yes|no)\b", text, re.I)
    return m.group(1).lower() if m else None


def answer_accuracy(answers: Sequence[str | None], expected: Sequence[str | None]) -> dict[str, float]:
    """Accuracy of yes/no answers over the items whose expected answer is yes or no; an answer
    with no yes/no word counts as wrong. `{"n": items counted, "accuracy": NaN when n == 0}`."""
    pairs = [(yes_no(a), yes_no(e)) for a, e in zip(answers, expected) if yes_no(e) is not None]
    if not pairs:
        return {"n": 0, "accuracy": float("nan")}
    return {"n": len(pairs), "accuracy": float(np.mean([a == e for a, e in pairs]))}

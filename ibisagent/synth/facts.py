"""Facts about one state of an episode, measured from the masks: what reasoning text may say.

Everything here is computed from the image geometry, the reference mask and the current mask,
so a sentence built from these facts is true of the state it describes. Masks are H x W bool;
positions are image positions (x = column, y = row; "left" is the image's left, not the
patient's); percentages are rounded to whole numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ibisagent.geometry import pixel_to_norm

ROWS = ("upper", "", "lower")
COLS = ("left", "", "right")


def position_words(x: float, y: float) -> str:
    """Words for a normalised position (x = column / W, y = row / H, in [0, 1]) on a 3 x 3
    grid: 'upper left', 'upper', 'left', 'centre', 'lower right', ..."""
    r = ROWS[min(int(y * 3), 2)]
    c = COLS[min(int(x * 3), 2)]
    return " ".join(w for w in (r, c) if w) or "centre"


def where_phrase(words: str) -> str:
    """'upper left' -> 'the upper-left part of the image'; 'centre' -> 'the centre of the image'."""
    return "the centre of the image" if words == "centre" else f"the {words.replace(' ', '-')} part of the image"


def relation(region_c: tuple[float, float], mask: np.ndarray) -> str:
    """Where a region's centroid (x, y pixels) lies relative to `mask` (H x W bool): 'above',
    'below', 'left of', 'right of', 'inside' (within the mask's bounding box), or '' (no mask)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return ""
    x, y = region_c
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    if x0 <= x <= x1 and y0 <= y <= y1:
        return "inside"
    dx = (x - (x0 + x1) / 2) / max(x1 - x0 + 1, 1)
    dy = (y - (y0 + y1) / 2) / max(y1 - y0 + 1, 1)
    if abs(dy) >= abs(dx):
        return "below" if dy > 0 else "above"
    return "right of" if dx > 0 else "left of"


@dataclass(frozen=True)
class Region:
    """One connected error region. `where`: position words of its centroid; `share_pct`: its
    area as a percentage of the reference (missed) or of the current mask (extra); `width_px`:
    twice its largest inner distance; `rel`: its place relative to the current mask."""

    where: str
    share_pct: int
    width_px: int
    rel: str
    largest: bool  # also the largest such region by area


def component_at(region: np.ndarray, x: int, y: int) -> np.ndarray | None:
    """The connected component (8-connectivity) of `region` containing pixel (x, y), or None."""
    import cv2

    if not region[y, x]:
        return None
    _, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    return labels == labels[y, x]


def largest_component(region: np.ndarray) -> np.ndarray | None:
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def describe_region(
    comp: np.ndarray, whole: np.ndarray, denom: int, mask: np.ndarray, depth: float | None = None
) -> Region:
    """A `Region` for component `comp` of error region `whole` (H x W bool); `denom` pixels is
    100%; `depth` the distance of its deepest pixel to its edge (computed when None)."""
    from ibisagent.clicker import error_distance

    H, W = comp.shape
    ys, xs = np.nonzero(comp)
    cx, cy = float(xs.mean()), float(ys.mean())
    if depth is None:
        depth = float(error_distance(comp).max())
    big = largest_component(whole)
    return Region(
        where=position_words(*pixel_to_norm(cx, cy, W, H)),
        share_pct=pct(comp.sum(), denom),
        width_px=max(1, round(2 * depth)),
        rel=relation((cx, cy), mask),
        largest=big is not None and int(big.sum()) == int(comp.sum()),
    )


def pct(part: float, whole: float) -> int:
    return 0 if whole <= 0 else int(round(100.0 * float(part) / float(whole)))


@dataclass(frozen=True)
class StateFacts:
    """The state before an action. `coverage_pct`: share of the target under the mask;
    `outside_pct`: share of the mask outside the target; `target_where`/`target_pct`: the
    target's centroid words and area as a share of the image; `mask_where`: the mask's."""

    structure: str
    target_present: bool
    target_where: str | None
    target_pct: int
    mask_present: bool
    mask_where: str | None
    coverage_pct: int
    outside_pct: int
    iou: float

    def to_dict(self) -> dict:
        return asdict(self)


def centroid_words(mask: np.ndarray) -> str | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    H, W = mask.shape
    return position_words(*pixel_to_norm(xs.mean(), ys.mean(), W, H))


def state_facts(structure: str, gt: np.ndarray, mask: np.ndarray) -> StateFacts:
    from ibisagent.metrics import iou

    tp = int(np.count_nonzero(gt & mask))
    return StateFacts(
        structure=structure,
        target_present=bool(gt.any()),
        target_where=centroid_words(gt),
        target_pct=max(pct(gt.sum(), gt.size), 1 if gt.any() else 0),
        mask_present=bool(mask.any()),
        mask_where=centroid_words(mask),
        coverage_pct=pct(tp, gt.sum()),
        outside_pct=pct(int(mask.sum()) - tp, mask.sum()),
        iou=round(iou(mask, gt), 4),
    )


def click_region(gt: np.ndarray, mask: np.ndarray, x: int, y: int, label: int) -> Region | None:
    """The error region a click (x, y pixels) falls in: a missed region (gt & ~mask) for a
    positive click, an extra region (~gt & mask) for a negative one; None if it falls in neither."""
    whole = (gt & ~mask) if label == 1 else (~gt & mask)
    comp = component_at(whole, x, y)
    if comp is None:
        return None
    denom = int(gt.sum()) if label == 1 else int(mask.sum())
    return describe_region(comp, whole, denom, mask)

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ibisagent.io.rle import rle_decode, rle_encode
from ibisagent.metrics import (
    click_honoured,
    dice,
    honoured_shares,
    iou,
    iou_at,
    mask_scores,
    noc,
    precision,
    recall,
    summarize_curves,
)


def test_hand_computed_scores():
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0, :3] = True  # 3 px
    gt[0, 1:] = True  # 3 px, overlap 2
    assert iou(pred, gt) == 2 / 4
    assert dice(pred, gt) == 4 / 6
    assert precision(pred, gt) == 2 / 3 and recall(pred, gt) == 2 / 3
    assert mask_scores(pred, gt)["iou"] == 0.5


def test_empty_conventions():
    z = np.zeros((3, 3), bool)
    assert iou(z, z) == 1.0 and dice(z, z) == 1.0
    o = np.ones((3, 3), bool)
    assert iou(z, o) == 0.0 and recall(z, o) == 0.0 and precision(z, o) == 1.0


def test_noc_and_iou_at():
    curve = [0.5, 0.79, 0.86, 0.91]
    assert noc(curve, 0.80) == 3 and noc(curve, 0.90) == 4 and noc(curve, 0.95, max_clicks=20) == 20
    assert iou_at(curve, 1) == 0.5 and iou_at(curve, 10) == 0.91 and iou_at([], 3) == 0.0
    s = summarize_curves([curve, [0.9]])
    assert s["n"] == 2 and s["noc"]["80"] == 2.0 and abs(s["mean_iou_at"]["1"] - 0.7) < 1e-9


@given(arrays(bool, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_rle_round_trip(mask):
    assert np.array_equal(rle_decode(rle_encode(mask)), mask)


def test_click_honoured_reads_x_as_column():
    mask = np.zeros((4, 6), bool)
    mask[1, 4] = True  # row 1, column 4
    assert click_honoured(mask, (4, 1, 1)) and not click_honoured(mask, (1, 3, 1))
    assert not click_honoured(mask, (4, 1, 0)) and click_honoured(mask, (0, 0, 0))
    rows = [
        {"clicks": [[4, 1, 1], [0, 0, 0], [2, 2, 0]], "honoured": [True, True, False]},
        {"clicks": [[1, 1, 1]], "honoured": [False]},
        {"error": "unreadable"},
    ]
    assert honoured_shares(rows) == {"positive": 0.5, "negative": 0.5}
    assert honoured_shares([]) == {"positive": None, "negative": None}

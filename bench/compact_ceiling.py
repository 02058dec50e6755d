"""What bounds the compact policy: its belief map, or its clicking and stopping?

    python bench/compact_ceiling.py ../shared/data [--weights PATH] [--steps 12] [--click-margin 0]

On the held-out split of `train compact`, from the referring query, runs every episode without
early stopping (it clicks while its rule has a candidate click, even one that brings the mask no
closer to the belief) for `--steps` actions and prints mean IoU (overall
and per category) of: the thresholded belief map itself; the mask after click k; and the best mask
of each episode chosen with the reference (an oracle stop, which no stop rule can beat).
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
from _heldout import heldout_parser, heldout_samples


def main() -> None:
    ap = heldout_parser(__doc__)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--click-margin", type=float, default=0.0)
    args = ap.parse_args()

    from ibisagent.data.structures import lookup
    from ibisagent.metrics import iou, iou_at
    from ibisagent.policies.compact import CompactPolicy
    from ibisagent.train.compact import heldout_episodes

    held, emb_files = heldout_samples(args)
    policy = CompactPolicy(args.weights, min_gain=-1.0, click_margin=args.click_margin)
    rows = []
    for s, gt, ep in heldout_episodes(policy, held, emb_files, args.steps):
        if gt is None:
            continue
        # The image is read again for its belief: the tool's cache still holds its embedding.
        belief = policy.belief(s.load()[0], ep.query).logits > 0
        info = lookup(s.structure)
        rows.append({"category": info.category if info else "other", "belief": iou(belief, gt), "curve": ep.iou_curve})

    def summary(values) -> dict:
        by_cat = defaultdict(list)
        for r, v in zip(rows, values):
            by_cat[r["category"]].append(v)
        return {"mean_iou": round(float(np.mean(values)), 4)} | {
            k: round(float(np.mean(v)), 3) for k, v in sorted(by_cat.items())
        }

    out = {"n": len(rows), "weights": args.weights, "belief_map": summary([r["belief"] for r in rows])}
    for k in (1, 2, 3, 5, args.steps):
        out[f"after_click_{k}"] = summary([iou_at(r["curve"], k) for r in rows])
    out["oracle_stop"] = summary([max(r["curve"], default=0.0) for r in rows])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Does the compact policy lose on *which* blob of its belief map it segments, or on each blob's extent?

    python bench/compact_components.py ../shared/data [--weights PATH] [--modes none top oracle]

On the held-out split of `train compact` (present targets, referring query), plays every episode
with the belief map cut down to some of its connected components (the parts where the logit is
above 0; everything else set to a sure "no"), then prints mean IoU overall and per category of the
thresholded belief and of the episode's final mask, per mode:

- `none`: the belief as the policy sees it (the shipped behaviour);
- `top`: only the component holding the most probability mass (a rule the policy could use);
- `oracle`: only the components that overlap the reference mask (needs the answer: the ceiling of
  any component chooser).

`oracle` far above `none` means blob choice costs the policy (a learned scorer of candidate blobs
would pay); `oracle` close to `none` means the blobs themselves are wrong (a better belief net).
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
from _heldout import heldout_parser, heldout_samples

MODES = ("none", "top", "oracle")


def keep_components(logits: np.ndarray, mode: str, gt: np.ndarray | None) -> np.ndarray:
    """H x W belief logits -> the same logits with the components `mode` drops set to -10."""
    import cv2

    from ibisagent.policies.compact import sigmoid

    target = logits > 0
    if mode == "none" or not target.any():
        return logits
    n, comp = cv2.connectedComponents(target.astype(np.uint8), connectivity=8)
    if mode == "top":
        mass = np.bincount(comp.ravel(), weights=sigmoid(logits).ravel(), minlength=n)
        mass[0] = -1  # the background
        keep = comp == int(np.argmax(mass))
    elif mode == "oracle":
        hit = np.unique(comp[target & gt])
        keep = np.isin(comp, hit[hit > 0])
    else:
        raise ValueError(mode)
    return np.where(keep | ~target, logits, -10.0).astype(np.float32)


def component_policy(weights: str, mode: str):
    """The compact policy with its belief cut down to the components `mode` keeps."""
    from ibisagent.policies.compact import Belief, CompactPolicy

    class ComponentPolicy(CompactPolicy):
        def begin(self, query: str, gt_mask=None) -> None:
            super().begin(query, gt_mask)
            self.gt = gt_mask
            self.cut = None

        def belief(self, image, query):
            full = super().belief(image, query)
            if self.cut is None or self.cut[0] is not full:
                self.cut = (full, Belief(keep_components(full.logits, mode, self.gt), full.presence))
            return self.cut[1]

    return ComponentPolicy(weights)


def main() -> None:
    ap = heldout_parser(__doc__)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--max-steps", type=int, default=20)
    args = ap.parse_args()

    from ibisagent.data.structures import lookup
    from ibisagent.metrics import iou
    from ibisagent.train.compact import heldout_episodes

    held, emb_files = heldout_samples(args)
    for mode in args.modes:
        policy = component_policy(args.weights, mode)
        by_cat: dict[str, list] = defaultdict(list)
        rows = []
        for s, gt, ep in heldout_episodes(policy, held, emb_files, args.max_steps):
            if gt is None or not hasattr(ep, "final_mask"):
                continue
            # An episode stopped at once for an unknown query (CompactPolicy.novelty) never asks for a belief.
            belief = policy.cut[1].logits > 0 if policy.cut else np.zeros_like(gt)
            info = lookup(s.structure)
            row = (iou(belief, gt), iou(ep.final_mask, gt), len(ep.steps))
            rows.append(row)
            by_cat[info.category if info else "other"].append(row)

        def mean(rs, i):
            return round(float(np.mean([r[i] for r in rs])), 4)

        out = {"mode": mode, "n": len(rows), "belief_iou": mean(rows, 0), "episode_iou": mean(rows, 1)}
        out["mean_steps"] = round(float(np.mean([r[2] for r in rows])), 2)
        out["per_category"] = {
            k: {"n": len(v), "belief": mean(v, 0), "episode": mean(v, 1)} for k, v in sorted(by_cat.items())
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

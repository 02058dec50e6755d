"""Does averaging the belief maps of independently trained compact nets beat each net alone?

    python bench/compact_ensemble.py ../shared/data --weights A.pt B.pt [C.pt ...]

On the held-out split of `train compact` (present targets, referring query) plays the compact policy
with each member's weights, then with a belief that is the mean of the members' belief logits
(and presence logits), and prints the mean IoU overall and per category of each. Single SFT runs
of the same recipe differ by about 0.02 (README, "Compact policy"), so an ensemble is the plain way
to take that variance out; what it costs is one belief forward per member and episode.
"""

from __future__ import annotations

import json

from _heldout import heldout_parser, heldout_samples


def ensemble_policy(members: list[str]):
    """The compact policy whose net averages the logits of the nets in `members` (weights files);
    the first member's training queries decide novelty."""
    import torch

    from ibisagent.policies.compact import CompactPolicy, load_net

    nets = [load_net(m) for m in members]

    class MeanNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.members = torch.nn.ModuleList(nets)
            self.known_texts, self.known_emb = nets[0].known_texts, nets[0].known_emb

        def forward(self, feats, text):
            outs = [net(feats, text) for net in self.members]
            return torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)

    policy = CompactPolicy(members[0])
    policy.net = MeanNet().eval()
    return policy


def main() -> None:
    ap = heldout_parser(__doc__, many_weights=True)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--skip-single", action="store_true", help="only the ensemble, not each member alone")
    args = ap.parse_args()

    from ibisagent.train.compact import evaluate_compact

    held, emb_files = heldout_samples(args)
    runs = [] if args.skip_single else [(m, f"compact:{m}") for m in args.weights]
    runs.append(("mean of " + " + ".join(args.weights), ensemble_policy(args.weights)))
    for name, policy in runs:
        res = evaluate_compact(policy, held, emb_files, args.max_steps)
        cats = {k: round(v["mean_iou"], 3) for k, v in res["per_category"].items() if v["n"] >= 10}
        print(json.dumps({"policy": name, "n": res["n"], "mean_iou": round(res["mean_iou"], 4), **cats}), flush=True)


if __name__ == "__main__":
    main()

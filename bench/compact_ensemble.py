"""Does averaging the belief maps of independently trained compact nets beat each net alone?

    python bench/compact_ensemble.py ../shared/data --weights A.pt B.pt [C.pt ...]

On the held-out split of `train compact` (present targets, referring query) plays the compact policy
with each member's weights, then with a belief that is the mean of the members' belief logits
(and presence logits), and prints the mean IoU overall and per category of each. Single SFT runs
of the same recipe differ by about 0.02 (README, "Compact policy"), so an ensemble is the plain way
to take that variance out; what it costs is one belief forward per member and episode.
"""

from __future__ import annotations

from _heldout import heldout_parser, heldout_samples, print_episodes, with_belief


def ensemble_policy(members: list[str]):
    """The compact policy whose net averages the logits of the nets in `members` (weights files);
    the first member's training queries decide novelty."""
    import torch

    from ibisagent.policies.compact import load_net

    nets = [load_net(m) for m in members]

    def mean_of_members(feats, text):
        outs = [net(feats, text) for net in nets]
        return torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)

    return with_belief(members[0], mean_of_members)


def main() -> None:
    ap = heldout_parser(__doc__, many_weights=True)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--skip-single", action="store_true", help="only the ensemble, not each member alone")
    args = ap.parse_args()

    held, emb_files = heldout_samples(args)
    runs = [] if args.skip_single else [(m, f"compact:{m}") for m in args.weights]
    runs.append(("mean of " + " + ".join(args.weights), ensemble_policy(args.weights)))
    for name, policy in runs:
        print_episodes("policy", name, policy, held, emb_files, args.max_steps)


if __name__ == "__main__":
    main()

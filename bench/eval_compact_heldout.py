"""Held-out episodes of compact-policy weights from the query alone (the figures of
`ibisagent train compact`, re-runnable for any weights file).

    python bench/eval_compact_heldout.py ../shared/data --weights ibisagent/policies/weights/compact_policy.pt \
        [--absent-only | --present-only] [--max-steps 20] [--lookahead K] [--min-gain G] [--click-margin M] [--guess-floor F] [--split val]
        [--reference-belief]

Same split by image as `train compact` (15% held out); embeddings from its disk cache. Prints mean
IoU per category on present targets, the share of absent-target questions (a structure that
cannot appear in the image) answered by stopping with "no", and the share of out-of-domain
queries (everyday objects, nonsense) answered without a click. With several --weights, also the
mean IoU difference of each against the first, paired by target, with a 95% bootstrap interval.
`--reference-belief` gives the policy the reference mask as its belief map (present, sure
everywhere): what its click rule and the tool reach when the belief is right, the ceiling of a
better belief network.
"""

from __future__ import annotations

import json

from _heldout import heldout_parser, heldout_samples


def reference_belief_policy(weights: str, kwargs: dict):
    """The compact policy with the episode's reference mask as its belief (logits +-10)."""
    import numpy as np

    from ibisagent.policies.compact import Belief, CompactPolicy

    class ReferenceBelief(CompactPolicy):
        def begin(self, query: str, gt_mask=None) -> None:
            super().begin(query, gt_mask)
            self.reference = Belief(np.where(gt_mask, 10.0, -10.0).astype(np.float32), 1.0)

        def belief(self, image, query):
            return self.reference

    return ReferenceBelief(weights, **kwargs)


def main() -> None:
    ap = heldout_parser(__doc__, many_weights=True)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--absent-only", action="store_true")
    ap.add_argument("--present-only", action="store_true")
    ap.add_argument("--lookahead", type=int, default=None, help="candidate clicks per sign (default: the policy's)")
    ap.add_argument("--min-gain", type=float, default=None, help="the policy's stop rule (default: its own)")
    ap.add_argument("--click-margin", type=float, default=None, help="the policy's click margin (default: its own)")
    ap.add_argument(
        "--guess-floor",
        type=float,
        default=None,
        help="the policy's best-guess floor (default: its own; inf: no guesses)",
    )
    ap.add_argument("--reference-belief", action="store_true", help="the reference mask as the belief map")
    args = ap.parse_args()

    from ibisagent.train.compact import evaluate_absent, evaluate_compact, evaluate_unknown_queries, paired_stages

    held, emb_files = heldout_samples(args)
    present = {}
    for w in args.weights:
        spec = f"compact:{w}"
        out = {"weights": w}
        if not args.absent_only:
            given = {
                "lookahead": args.lookahead,
                "min_gain": args.min_gain,
                "click_margin": args.click_margin,
                "guess_floor": args.guess_floor,
            }
            kwargs = {k: v for k, v in given.items() if v is not None}
            policy = reference_belief_policy(w, kwargs) if args.reference_belief else spec
            res = present[w] = evaluate_compact(policy, held, emb_files, args.max_steps, policy_kwargs=kwargs)
            out |= {
                k: res[k]
                for k in ("n", "mean_iou", "mean_steps", "no_click", "per_category", "per_modality", "per_target")
            }
        if not args.present_only:
            out["absent"] = evaluate_absent(spec, held, emb_files, args.max_steps)
            out["unknown_queries"] = evaluate_unknown_queries(spec, held, emb_files)
        print(json.dumps(out), flush=True)
    first, *others = list(present) or [None]
    for w in others:  # paired by target, with a 95% bootstrap interval of the mean difference
        print(json.dumps({"paired": f"{w} - {first}"} | paired_stages(present[first], present[w])), flush=True)


if __name__ == "__main__":
    main()

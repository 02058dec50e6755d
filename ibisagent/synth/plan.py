"""Which trajectories to synthesize: one seeded, order-independent plan over a dataset.

Every sample gets a `segment` trajectory; `refine`, `self_correction`, `discard` and `vqa`
ones with the probabilities of `mix`; every image gets absent-target samples
(`data.queries.absent_targets`) whose trajectories are `negative` (stop with "no") and `vqa`.
A decision depends only on (seed, sample id, kind), so adding samples never changes the others.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ibisagent.data.pairs import Sample
from ibisagent.data.queries import Query, _fill, make_query, modality_noun
from ibisagent.errors import IbisInputError
from ibisagent.synth.records import KINDS

DEFAULT_MIX = {"segment": 1.0, "refine": 0.3, "self_correction": 0.3, "discard": 0.2, "vqa": 0.2, "negative": 1.0}

# Plain yes/no questions: answered without clicks (the spec's general VQA data).
VQA = (
    "{Is_there} in this {m}? Answer yes or no.",
    "Does this {m} show {a} {s}? Answer with yes or no.",
    "Answer yes or no: does this {m} contain {a} {s}?",
)


def parse_mix(text: str) -> dict[str, float]:
    """'segment=1,refine=0.5' -> probabilities (kinds not named keep their defaults)."""
    mix = dict(DEFAULT_MIX)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in KINDS:
            raise IbisInputError("--mix", f"unknown kind {name!r}; choose from {', '.join(KINDS)}")
        try:
            p = float(value)
        except ValueError:
            raise IbisInputError("--mix", f"{part!r} is not KIND=PROBABILITY") from None
        if not 0.0 <= p <= 1.0:
            raise IbisInputError("--mix", f"probability of {name} must be in [0, 1], got {p}")
        mix[name] = p
    return mix


@dataclass(frozen=True)
class Item:
    """One trajectory to make: `index` into the run's sample list (samples, then absent-target
    samples), the trajectory kind and its query."""

    key: str
    index: int
    kind: str
    query: Query


def _chance(seed: int, sample: Sample, kind: str) -> float:
    return random.Random(f"{seed}:{sample.id}:{kind}:plan").random()


def vqa_query(sample: Sample, seed: int) -> Query:
    rng = random.Random(f"{seed}:{sample.id}:vqa")
    i = rng.randrange(len(VQA))
    text = _fill(VQA[i], sample.structure, modality_noun(sample))
    answer = "No." if sample.negative else "Yes."
    return Query(sample.id, "vqa", text, sample.structure, answer, not sample.negative, i, seed=seed)


def segment_query(sample: Sample, seed: int) -> Query:
    """A referring, reasoning or closed (segment-if-present) query, chosen by the seed."""
    kinds = ("referring", "closed") if sample.negative else ("referring", "reasoning", "closed")
    kind = random.Random(f"{seed}:{sample.id}:query-kind").choice(kinds)
    return make_query(sample, kind, seed)


def plan_items(samples: list[Sample], negatives: list[Sample], mix: dict[str, float], seed: int) -> list[Item]:
    """Items in a stable order: grouped by image (so a worker encodes each image once)."""
    from ibisagent.eval.harness import sample_keys

    everything = samples + negatives
    keys = sample_keys(everything)
    items: list[tuple[str, Item]] = []
    for i, (s, key) in enumerate(zip(everything, keys)):
        group = f"{s.image_key}@{s.frame}"
        if s.negative:
            wanted = [k for k in ("negative", "vqa") if _chance(seed, s, k) < mix.get(k, 0.0)]
        else:
            wanted = [
                k
                for k in ("segment", "refine", "self_correction", "discard", "vqa")
                if _chance(seed, s, k) < mix.get(k, 0.0)
            ]
        for kind in wanted:
            if kind == "vqa":
                q = vqa_query(s, seed)
            elif kind in ("refine", "discard"):
                q = make_query(s, "refinement", seed)
            else:
                q = segment_query(s, seed)
            items.append((group, Item(f"{key}|{kind}", i, kind, q)))
    items.sort(key=lambda gi: (gi[0], gi[1].key))
    return [it for _, it in items]

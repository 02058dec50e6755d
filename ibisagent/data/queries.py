"""Queries for the three capabilities, from seeded templates.

- referring:  the target is named ("Segment the left kidney in this CT image.")
- reasoning:  the target is implied by a clue from `structures.TABLE` ("Segment the organ that
              filters blood and produces urine.") or by the finding it suggests
- refinement: a given mask (a seeded perturbation of the reference, see `perturb.py`) is to be
              corrected ("The liver mask is incomplete. Refine {it}.")
- closed:     a yes/no question; on a negative sample (target absent) the answer is "no" and the
              right behaviour is to stop with no clicks.

Choices depend only on (seed, sample id, kind), never on list order, so a query set is
reproducible and stable when samples are added.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np

from ibisagent.data.modality import canonical_modality
from ibisagent.data.pairs import Sample
from ibisagent.data.structures import lookup
from ibisagent.errors import IbisInputError

KINDS = ("referring", "reasoning", "refinement", "closed")

MODALITY_NOUN = {
    "CT": "CT image",
    "MRI": "MRI scan",
    "X-ray": "X-ray",
    "mammography": "mammogram",
    "ultrasound": "ultrasound image",
    "fundus": "fundus photograph",
    "OCT": "OCT scan",
    "endoscopy": "endoscopy image",
    "dermoscopy": "dermoscopy image",
    "pathology": "pathology slide",
    "microscopy": "microscopy image",
    "PET": "PET image",
}

REFERRING = (
    "Segment the {s} in this {m}.",
    "Please segment the {s}.",
    "Outline the {s} in this {m}.",
    "Where {is_} the {s}? Segment {it}.",
    "Can you delineate the {s} in this {m}?",
    "Mark the region of the {s}.",
    "Find and segment the {s} shown in the {m}.",
)
REASONING_CLUE = (
    "Segment the {c} that {clue}.",
    "Which {c} in this {m} {clue}? Segment {it}.",
    "In this {m}, find the {c} that {clue} and outline {it}.",
    "Show me the {c} that {clue}.",
)
REASONING_FINDING = (
    "Is there any sign of {f} in this {m}? If so, segment the responsible {c}.",
    "Does this {m} suggest {f}? Segment the {c} that would explain it.",
    "Look for a {c} that may indicate {f} and segment {it}.",
)
REFINEMENT = (
    "The mask of the {s} is not accurate. Refine {it}.",
    "Improve the given segmentation of the {s}.",
    "Here is a rough {s} mask; correct its errors.",
    "The current mask should cover the {s} exactly. Fix {it}.",
)
CLOSED = (
    "{Is_there} in this {m}? If yes, segment {it}.",
    "Does this {m} show {a} {s}? Segment {it} if present.",
    "Can you find {a} {s} here? Segment {it}, or say {it} {is_} absent.",
    "Check whether this {m} contains {a} {s}; if it does, outline {it}.",
)


def _plural(s: str) -> bool:
    last = s.split()[-1].lower() if s.split() else s
    return last.endswith(("s", "i")) and not last.endswith(("us", "ss", "is", "sis"))


def _fill(template: str, s: str, m: str, **kw: str) -> str:
    plural = _plural(s)
    a = "any" if plural else ("an" if s[:1].lower() in "aeiou" else "a")
    is_there = f"Are there any {s}" if plural else f"Is there {a} {s}"
    it, is_ = ("them", "are") if plural else ("it", "is")
    return template.format(s=s, m=m, a=a, Is_there=is_there, it=it, is_=is_, **kw)


@dataclass(frozen=True)
class Query:
    """One question about one sample. `answer`: the expected short answer of the final stop;
    `target_present`: False means stop with no clicks; `perturbation`: for refinement, the
    recipe of the given initial mask (`perturb.perturb_mask(gt, perturbation, seed)`)."""

    sample_id: str
    kind: str
    text: str
    structure: str
    answer: str
    target_present: bool
    template: int
    perturbation: str = ""
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _rng(seed: int, sample: Sample, kind: str) -> random.Random:
    return random.Random(f"{seed}:{sample.id}:{kind}")


def modality_noun(sample: Sample) -> str:
    return MODALITY_NOUN.get(canonical_modality(sample.modality), "image")


def make_query(sample: Sample, kind: str, seed: int = 0) -> Query:
    """A query of `kind` for `sample`; a negative sample gets answer "no"/absent."""
    if kind not in KINDS:
        raise IbisInputError(kind, f"unknown query kind; choose from {', '.join(KINDS)}")
    if kind == "refinement" and sample.negative:
        raise IbisInputError(sample.id, "a refinement query needs a target that is present")
    rng = _rng(seed, sample, kind)
    s, m = sample.structure, modality_noun(sample)
    info = lookup(s)
    perturbation = ""
    if kind == "referring":
        i = rng.randrange(len(REFERRING))
        text = _fill(REFERRING[i], s, m)
    elif kind == "reasoning" and info is not None:
        pool = REASONING_CLUE + (REASONING_FINDING if info.finding else ())
        i = rng.randrange(len(pool))
        c = "structure" if info.category == "anatomy" else info.category
        text = _fill(pool[i], s, m, c=c, clue=info.clue, f=info.finding)
    elif kind == "reasoning":  # not in the table: a clue-less question that still needs looking
        i = 100 + rng.randrange(len(CLOSED))
        text = _fill(CLOSED[i - 100], s, m)
    elif kind == "refinement":
        from ibisagent.data.perturb import PERTURBATIONS

        i = rng.randrange(len(REFINEMENT))
        text = _fill(REFINEMENT[i], s, m)
        perturbation = rng.choice(PERTURBATIONS)
    else:
        i = rng.randrange(len(CLOSED))
        text = _fill(CLOSED[i], s, m)
    present = not sample.negative
    if kind == "closed":
        answer = "Yes, the {s} {is_} present and segmented." if present else "No, there {is_} no {s} in this image."
    else:
        answer = "The {s} {is_} segmented." if present else "There {is_} no {s} in this image."
    answer = _fill(answer, s, m)
    return Query(sample.id, kind, text, s, answer, present, i, perturbation, seed)


def _empty_loader(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    image, _ = sample.load()
    return image, np.zeros(image.shape[:2], bool)


# Regions that can appear in one image are grouped: an abdominal CT slice may show lung bases.
REGION_GROUP = {
    "chest": "torso",
    "heart": "torso",
    "abdomen": "torso",
    "pelvis": "torso",
    "colon": "gi",
    "oesophagus": "gi",
    "blood": "microscopy",
    "cells": "microscopy",
}


def _group(structure: str) -> str | None:
    info = lookup(structure)
    if info is None or info.region == "any":
        return None
    return REGION_GROUP.get(info.region, info.region)


def absent_targets(samples: list[Sample], seed: int = 0, per_image: int = 1) -> list[Sample]:
    """Negative samples for absent-target questions: each image (or volume slice) paired with a
    structure whose body region (per `structures.TABLE`) cannot appear in it, so the target is
    surely absent rather than merely unannotated. Images with a structure of unknown region get
    none."""
    by_image: dict[str, list[Sample]] = {}
    for s in samples:
        if not s.negative:
            by_image.setdefault(f"{s.image_key}@{s.frame}", []).append(s)
    names = sorted({s.structure for s in samples if not s.negative and _group(s.structure)})
    out = []
    for key in sorted(by_image):
        group = by_image[key]
        here = {_group(s.structure) for s in group}
        if None in here:
            continue
        candidates = [n for n in names if _group(n) not in here and not here & set(lookup(n).also_in)]
        rng = random.Random(f"{seed}:absent:{key}")
        first = group[0]
        for n in rng.sample(candidates, min(per_image, len(candidates))):
            out.append(
                Sample(
                    first.image,
                    None,
                    n,
                    first.modality,
                    first.origin,
                    first.frame,
                    negative=True,
                    # File-backed: no loader, so caches keyed on the image file (the synthesis
                    # job's embedding cache) still apply.
                    loader=None if first.loader is None else partial(_empty_loader, first),
                )
            )
    return out


# Things no medical image here shows, for queries the policy must answer "not found" (training
# negatives; `evaluate_unknown_queries` measures on a disjoint list).
EVERYDAY_OBJECTS = (
    "car", "banana", "cat", "dog", "bicycle", "house", "guitar", "pizza", "airplane", "chair",
    "laptop", "sofa", "clock", "shoe", "boat", "horse", "traffic light", "bird", "sandwich", "television",
    "mountain", "cloud", "bottle", "book", "teddy bear", "football", "window", "bridge", "elephant", "spoon",
)  # fmt: skip
OOD_TEMPLATES = (
    "Segment the {}.",
    "Where is the {} in this image?",
    "Find the {}.",
    "Outline the {}.",
    "Is there a {}?",
)


def out_of_domain_queries(rng: random.Random, n: int, objects: tuple[str, ...] = EVERYDAY_OBJECTS) -> list[str]:
    """n queries that name nothing a medical image shows: everyday objects in query templates, and
    random letter strings (nonsense typed into the box)."""
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            words = [
                "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
                for _ in range(rng.randint(1, 3))
            ]
            out.append(" ".join(words))
        else:
            out.append(rng.choice(OOD_TEMPLATES).format(rng.choice(objects)))
    return out


def mirror_text(text: str) -> str:
    """The query for the left-right mirrored image: "left" and "right" swapped (any case)."""
    import re

    swap = {"left": "right", "right": "left"}

    def sub(m: re.Match) -> str:
        word = swap[m.group(0).lower()]
        return word.capitalize() if m.group(0)[0].isupper() else word

    return re.sub(r"\b(left|right)\b", sub, text, flags=re.IGNORECASE)


def build_queries(samples: Iterable[Sample], kinds: Iterable[str] = KINDS, seed: int = 0) -> list[tuple[Sample, Query]]:
    """Every applicable (sample, query) for `kinds`; refinement is skipped for negatives."""
    kinds = list(kinds)
    for k in kinds:
        if k not in KINDS:
            raise IbisInputError(k, f"unknown query kind; choose from {', '.join(KINDS)}")
    return [(s, make_query(s, k, seed)) for s in samples for k in kinds if not (k == "refinement" and s.negative)]


def paraphrase_queries(pairs: list[tuple[Sample, Query]], paraphraser) -> list[tuple[Sample, Query]]:
    """Each query's text through `paraphraser` (see `paraphrase.Paraphraser`); queries that name
    their target must still name it, else the template text is kept."""
    from dataclasses import replace

    out = []
    for s, q in pairs:
        keep = None if q.kind == "reasoning" else q.structure
        out.append((s, replace(q, text=paraphraser(q.text, seed=q.seed, must_contain=keep))))
    return out

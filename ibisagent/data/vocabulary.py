"""Which known structure a query names, under typos, plurals, British spellings, synonyms and
abbreviations: the agent resolves "Segment the kidny.", "renal parenchyma" or "the LV" to the
structure it was trained on instead of refusing.

`target_phrase` cuts the named thing out of a query ("Please outline the kidneys in this CT." ->
"kidneys"); `resolve` matches it against the known structure names: exact (after normalising
case, spelling and plurals), a synonym from `SYNONYMS`, words corrected by fuzzy matching
(difflib, standard library), a close whole phrase, or a more specific known name that contains
all its words. Pure string work: no model, no image.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

# British -> American spellings, applied word by word before anything else.
SPELLING = {
    "tumour": "tumor",
    "tumours": "tumors",
    "haemorrhage": "hemorrhage",
    "haemorrhages": "hemorrhages",
    "oedema": "edema",
    "oesophagus": "esophagus",
    "foetal": "fetal",
    "grey": "gray",
    "disk": "disc",
    "disks": "discs",
    "haematoma": "hematoma",
    "naevus": "nevus",
    "ischaemic": "ischemic",
    "anaemia": "anemia",
    "centre": "center",
    "esophageal": "esophagus",
}

# Irregular plurals (key form is singular); regular ones lose their "s" (`singular`).
IRREGULAR = {
    "nuclei": "nucleus",
    "glomeruli": "glomerulus",
    "vertebrae": "vertebra",
    "metastases": "metastasis",
    "bronchi": "bronchus",
    "alveoli": "alveolus",
    "caries": "caries",
    "lymphocytes": "lymphocyte",
    "plexus": "plexus",
    "corpus": "corpus",
}

# Other words for a structure (key form: lower case, singular, American spelling) -> the key of a
# name the policy may know. Only unambiguous ones: a bare "lesion" or "ventricle" is left to the
# policy's text encoder, which reads the whole query.
SYNONYMS = {
    "renal parenchyma": "kidney",
    "kidney parenchyma": "kidney",
    "renal": "kidney",
    "hepatic parenchyma": "liver",
    "liver parenchyma": "liver",
    "hepar": "liver",
    "lung field": "lung",
    "lung parenchyma": "lung",
    "pulmonary parenchyma": "lung",
    "lv": "left ventricle",
    "lv cavity": "left ventricle",
    "left ventricular cavity": "left ventricle",
    "rv": "right ventricle",
    "right ventricular cavity": "right ventricle",
    "la": "left atrium",
    "myo": "myocardium",
    "heart muscle": "myocardium",
    "cardiac muscle": "myocardium",
    "left ventricular myocardium": "myocardium",
    "colonic polyp": "colon polyp",
    "colorectal polyp": "colon polyp",
    "adenoma": "colon polyp",
    "retinal vessel": "retinal blood vessel",
    "retinal vasculature": "retinal blood vessel",
    "fundus vessel": "retinal blood vessel",
    "blood vessel": "retinal blood vessel",
    "vasculature": "retinal blood vessel",
    "nucleus": "cell nucleus",
    "rbc": "red blood cell",
    "erythrocyte": "red blood cell",
    "red cell": "red blood cell",
    "optic nerve head": "optic disc",
    "melanoma": "skin lesion",
    "nevus": "skin lesion",
    "mole": "skin lesion",
    "skin cancer": "skin lesion",
    "wound": "foot ulcer",
    "diabetic foot ulcer": "foot ulcer",
    "ulcer": "foot ulcer",
    "tooth decay": "dental caries",
    "caries": "dental caries",
    "thyroid": "thyroid gland",
    "carotid": "common carotid artery",
    "carotid artery": "common carotid artery",
    "brachial plexus": "brachial plexus nerve",
    "vertebral body": "vertebra",
    "spine": "vertebra",
    "stroke": "ischemic stroke lesion",
    "infarct": "ischemic infarct",
    "infarction": "ischemic infarct",
    "ms lesion": "multiple sclerosis lesion",
    "ms plaque": "multiple sclerosis lesion",
    "demyelinating lesion": "multiple sclerosis lesion",
    "glioma": "brain tumor",
    "glioblastoma": "brain tumor",
    "fetal skull": "fetal head",
    "prostate gland": "prostate",
    "gall bladder": "gallbladder",
    "barrett": "barrett esophagus",
    "small intestine": "small bowel",
    "large intestine": "large bowel",
    "ivc": "inferior vena cava",
    "vena cava": "inferior vena cava",
    "gm": "gray matter",
    "wm": "white matter",
    "exudate": "hard exudate",
    "bleed": "hemorrhage",
    "bleeding": "hemorrhage",
    "hematoma": "hemorrhage",
    "nasopharyngeal cancer": "nasopharyngeal carcinoma",
    "npc": "nasopharyngeal carcinoma",
    "ovarian mass": "ovarian tumor",
    "ovarian cyst": "ovarian tumor",
    "breast mass": "breast tumor",
    "breast cancer": "breast tumor",
    "liver cancer": "liver tumor",
    "hepatic tumor": "liver tumor",
    "hepatic lesion": "liver lesion",
    "lung cancer": "lung tumor",
    "lung nodule": "nodule",
    "pulmonary nodule": "nodule",
    "bladder cancer": "bladder tumor",
    "pancreatic cancer": "pancreatic tumor",
    "prostate cancer": "prostate tumor",
    "disc": "intervertebral disc",
    "cell membrane": "neuronal cell membrane",
    "membrane": "neuronal cell membrane",
}

# Words too general to stand for one known structure by themselves (left to the text encoder).
GENERIC = {
    "lesion", "tumor", "mass", "structure", "organ", "region", "area", "tissue", "cell", "abnormality",
    "object", "target", "thing", "finding", "left", "right", "upper", "lower", "part", "ventricle", "atrium",
    "vessel", "cancer", "benign", "malignant", "image", "it", "them", "one",
}  # fmt: skip

SIDES = ("left", "right", "upper", "lower")

_VERBS = (
    r"find and segment|find and outline|segment|outline|delineate|locate|find|mark the region of|mark|show me|"
    r"show|highlight|detect|identify|draw|label|extract|isolate|where is|where are|is there|are there|"
    r"contains?|shows?|see"
)
_LEAD = re.compile(rf"\b(?:{_VERBS})\b\s+(?:(?:the|a|an|any|all|every|each|of)\s+)*(.+)", re.I)
_TAIL = re.compile(
    r"\s*(?:\b(?:in|on|within|from|inside|shown|visible|present|seen|here|if|please|for me|of this|of the image)\b|[.?!,;:]).*$",
    re.I | re.S,
)


def target_phrase(query: str) -> str:
    """The thing a query names: the words after its first verb of segmenting or looking ("segment",
    "outline", "where is", "is there", ...) and its articles, up to the first place word or
    punctuation ("in this CT", "?"). A query without such a verb is taken whole (a bare name)."""
    text = " ".join(query.strip().split())
    m = _LEAD.search(text)
    phrase = m.group(1) if m else text
    phrase = _TAIL.sub("", phrase)
    return phrase.strip(" .?!,;:'\"").lower()


def singular(word: str) -> str:
    """A word's singular, by rule ("kidneys" -> "kidney", "nuclei" -> "nucleus", "ovaries" -> "ovary")."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "sis")):
        return word[:-1]
    return word


def key(phrase: str) -> str:
    """Normal form for comparing names: lower case, American spelling, apostrophes and hyphens
    dropped, each word singular ("Barrett's oesophagus" -> "barrett esophagus")."""
    low = phrase.lower().replace("'s ", " ").replace("'", "").replace("-", " ")
    words = re.findall(r"[a-z0-9]+", low)
    return " ".join(singular(SPELLING.get(w, w)) for w in words)


@dataclass(frozen=True)
class Resolution:
    """What a query names: `phrase` (cut from the query), `structure` the known name it resolves
    to or None, `how` ("exact", "synonym", "spelling", "close", "specific" or "unknown") and `note`,
    one sentence saying how it was read (empty for an exact name)."""

    phrase: str
    structure: str | None
    how: str
    note: str = ""

    @property
    def reworded(self) -> bool:
        """True when the query names a known structure under other words."""
        return self.structure is not None and self.how != "exact"


class Vocabulary:
    """The known structure names (e.g. `CompactPolicy.known_structures`) and `resolve`."""

    def __init__(self, structures):
        self.structures = sorted(set(structures))
        self.by_key: dict[str, str] = {}
        for s in sorted(self.structures, key=len):  # the shortest name of a key stands for it
            self.by_key.setdefault(key(s), s)
        self.words = sorted(
            {w for k in list(self.by_key) + list(SYNONYMS) + list(SYNONYMS.values()) for w in k.split()}
        )

    def _direct(self, k: str) -> tuple[str | None, str]:
        if k in self.by_key:
            return self.by_key[k], "exact"
        side, _, rest = k.partition(" ")
        if side in SIDES and rest in SYNONYMS:  # "left renal parenchyma" -> "left kidney" (or "kidney")
            sided = f"{side} {SYNONYMS[rest]}"
            found, _ = self._direct(sided if sided in self.by_key else rest)
            if found:
                return found, "synonym"
        if k in SYNONYMS:
            target = SYNONYMS[k]
            if target in self.by_key:
                return self.by_key[target], "synonym"
            hits = self._containing(target)
            if hits:
                return hits[0], "synonym"
        return None, "unknown"

    def _containing(self, k: str) -> list[str]:
        """Known names whose key has every word of `k`, shortest first."""
        words = set(k.split())
        return sorted((s for kk, s in self.by_key.items() if words <= set(kk.split())), key=lambda s: (len(s), s))

    def correct(self, k: str) -> str:
        """Each word of a key replaced by the closest known word (difflib ratio >= 0.8; words of 4
        letters or more) -> the corrected key."""
        out = []
        for w in k.split():
            if len(w) >= 4 and w not in self.words:
                close = difflib.get_close_matches(w, self.words, n=1, cutoff=0.8)
                w = close[0] if close else w
            out.append(w)
        return " ".join(out)

    def resolve(self, query: str) -> Resolution:
        phrase = target_phrase(query)
        k = key(phrase)
        if not k:
            return Resolution(phrase, None, "unknown")
        found, how = self._direct(k)
        if found and how == "exact":
            exact_name = phrase.lower() == found.lower()
            note = "" if exact_name else f'I read "{phrase}" as the {found}.'
            return Resolution(phrase, found, "exact", note)
        if found:
            return Resolution(phrase, found, how, f'I read "{phrase}" as the {found}, another name for it.')
        fixed = self.correct(k)
        if fixed != k:
            found, _ = self._direct(fixed)
            if found:
                return Resolution(phrase, found, "spelling", f'I read "{phrase}" as the {found} (spelling corrected).')
        close = difflib.get_close_matches(fixed, list(self.by_key), n=1, cutoff=0.85)
        if close:
            found = self.by_key[close[0]]
            return Resolution(phrase, found, "close", f'I read "{phrase}" as the {found}, the closest name I know.')
        if not set(fixed.split()) <= GENERIC:
            hits = self._containing(fixed)
            if hits:
                found = hits[0]
                return Resolution(
                    phrase,
                    found,
                    "specific",
                    f'I read "{phrase}" as the {found}, the nearest structure I know by name.',
                )
        return Resolution(phrase, None, "unknown")


NAMED_QUERY = re.compile(r"^Segment the (.+)\.$")


_NOT_A_NAME = re.compile(r" in this \w| that ")


def structures_of_queries(texts) -> list[str]:
    """The structure names among training query texts: every training target has the query
    "Segment the {structure}." (`train.compact.sft.query_texts`); template queries of the same shape
    ("Segment the kidney in this CT image.", "Segment the organ that ...") are not names."""
    return sorted({m.group(1) for t in texts if (m := NAMED_QUERY.match(t)) and not _NOT_A_NAME.search(m.group(1))})

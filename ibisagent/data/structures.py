"""A small table of biomedical structures: what kind of thing each is, where it is, and a clue
that implies it without naming it. Reasoning-style queries and absent-target questions use it.

Lookup is by the longest keyword contained in the structure's name ("left kidney" -> kidney).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StructureInfo:
    keyword: str
    category: str  # the noun the clue completes: organ, lesion, cell(s), vessel(s), tissue, structure(s)
    region: str  # body region or specimen; absent-target questions pick another region
    clue: str  # completes "the structure that ..." without naming it
    finding: str = ""  # for lesions: the condition its presence suggests
    also_in: tuple[str, ...] = ()  # regions where something of the same name exists (brain ventricles)


TABLE: tuple[StructureInfo, ...] = (
    StructureInfo("liver", "organ", "abdomen", "produces bile and detoxifies the blood"),
    StructureInfo("kidney", "organ", "abdomen", "filters blood and produces urine"),
    StructureInfo("spleen", "organ", "abdomen", "filters old red blood cells and sits in the left upper abdomen"),
    StructureInfo("pancreas", "organ", "abdomen", "secretes insulin and digestive enzymes"),
    StructureInfo("stomach", "organ", "abdomen", "stores and digests food after the oesophagus"),
    StructureInfo("gallbladder", "organ", "abdomen", "stores bile under the liver"),
    StructureInfo("adrenal gland", "organ", "abdomen", "sits on top of the kidney and secretes cortisol"),
    StructureInfo("small bowel", "organ", "abdomen", "absorbs most nutrients between stomach and colon"),
    StructureInfo("large bowel", "organ", "abdomen", "absorbs water before stool leaves the body"),
    StructureInfo("aorta", "vessel", "abdomen", "carries oxygenated blood from the heart to the body"),
    StructureInfo("vena cava", "vessel", "abdomen", "returns blood from the lower body to the heart"),
    StructureInfo("lung", "organ", "chest", "fills with air and exchanges oxygen"),
    StructureInfo("covid-19 infection", "lesion", "chest", "shows ground-glass infection", "viral pneumonia"),
    StructureInfo("nodule", "lesion", "chest", "is a small round opacity in the lung", "a possible early lung cancer"),
    StructureInfo("lung tumor", "lesion", "chest", "is a mass growing in the lung", "lung cancer"),
    StructureInfo("ventricle", "anatomy", "heart", "pumps blood out of the heart", also_in=("head",)),
    StructureInfo("atrium", "anatomy", "heart", "receives blood returning to the heart"),
    StructureInfo("myocardium", "tissue", "heart", "is the muscular wall of the heart"),
    StructureInfo("blood pool", "anatomy", "heart", "is the blood inside the heart chambers and great vessels"),
    StructureInfo("brain", "organ", "head", "is enclosed by the skull"),
    StructureInfo("gray matter", "tissue", "head", "forms the cerebral cortex"),
    StructureInfo("white matter", "tissue", "head", "holds the myelinated fibre tracts of the brain"),
    StructureInfo("hippocampus", "anatomy", "head", "is essential for forming new memories"),
    StructureInfo("hemorrhage", "lesion", "head", "is bleeding inside the skull", "a haemorrhagic stroke or trauma"),
    StructureInfo("tumor", "lesion", "any", "is an abnormal mass of tissue", "a neoplasm"),
    StructureInfo("glioma", "lesion", "head", "is a tumour arising from glial cells", "a brain tumour"),
    StructureInfo("edema", "lesion", "any", "is swelling around a lesion", "mass effect"),
    StructureInfo("prostate", "organ", "pelvis", "surrounds the male urethra below the bladder"),
    StructureInfo("uterus", "organ", "pelvis", "is where a fetus develops"),
    StructureInfo("breast lesion", "lesion", "breast", "is an abnormal area in the breast tissue", "breast disease"),
    StructureInfo("breast tumor", "lesion", "breast", "is a mass in the breast", "breast cancer"),
    StructureInfo("polyp", "lesion", "colon", "protrudes from the bowel lining", "a colorectal cancer precursor"),
    StructureInfo(
        "barrett",
        "lesion",
        "oesophagus",
        "replaces the oesophageal lining after chronic reflux",
        "Barrett's oesophagus",
    ),
    StructureInfo("optic disc", "anatomy", "eye", "is where the optic nerve leaves the eye"),
    StructureInfo(
        "optic cup",
        "anatomy",
        "eye",
        "is the pale central depression of the optic nerve head",
        "glaucoma when enlarged",
    ),
    StructureInfo("retinal blood vessels", "vessels", "eye", "supply blood to the retina"),
    StructureInfo("skin lesion", "lesion", "skin", "is an abnormal patch on the skin", "melanoma or a naevus"),
    StructureInfo(
        "kidney stone", "lesion", "abdomen", "is a calcified deposit in the urinary tract", "nephrolithiasis"
    ),
    StructureInfo("liver lesion", "lesion", "abdomen", "is a focal abnormality in the liver", "a liver tumour or cyst"),
    StructureInfo("carotid artery", "vessel", "neck", "carries blood from the aorta to the head"),
    StructureInfo("nerve", "anatomy", "neck", "carries nerve signals to the arm"),
    StructureInfo("nuclei", "structures", "cells", "hold the DNA of each cell"),
    StructureInfo("cell membranes", "structures", "cells", "bound each neuron in the tissue"),
    StructureInfo("red blood cells", "cells", "blood", "carry oxygen in the blood"),
    StructureInfo("neutrophil", "cell", "blood", "is the most common white blood cell, with a multi-lobed nucleus"),
    StructureInfo("lymphocyte", "cell", "blood", "is a small white blood cell with a round dense nucleus"),
    StructureInfo("monocyte", "cell", "blood", "is the largest white blood cell, with a kidney-shaped nucleus"),
    StructureInfo("cells", "cells", "cells", "make up this sample, each one separately"),
    StructureInfo("fetal head", "anatomy", "fetus", "is the head of the unborn baby"),
)


def lookup(structure: str) -> StructureInfo | None:
    """The table entry whose keyword is contained in `structure`, preferring one at the end (the
    head noun: "brain tumor" -> tumor), then the longest; or None."""
    low = structure.lower()
    hits = [info for info in TABLE if info.keyword in low]
    return max(hits, key=lambda i: (low.endswith(i.keyword), len(i.keyword))) if hits else None

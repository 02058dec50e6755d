"""Canonical modality names from the free text datasets use ("CT (abdomen, axial slice)" -> "CT")."""

from __future__ import annotations

# (word found in the lower-cased text, canonical name); first match wins, so specific first.
_RULES: tuple[tuple[str, str], ...] = (
    ("mammogra", "mammography"),
    ("x-ray", "X-ray"),
    ("xray", "X-ray"),
    ("radiograph", "X-ray"),
    ("cxr", "X-ray"),
    ("oct", "OCT"),
    ("fundus", "fundus"),
    ("dermoscop", "dermoscopy"),
    ("endoscop", "endoscopy"),
    ("colonoscop", "endoscopy"),
    ("ultrasound", "ultrasound"),
    ("microscop", "microscopy"),
    ("pathology", "pathology"),
    ("histolog", "pathology"),
    ("mri", "MRI"),
    ("mr", "MRI"),
    ("ct", "CT"),
    ("pet", "PET"),
)


def canonical_modality(text: str) -> str:
    """One of CT, MRI, X-ray, mammography, ultrasound, fundus, OCT, endoscopy, dermoscopy,
    pathology, microscopy, PET, or "unknown"."""
    low = (text or "").lower()
    words = set(low.replace("(", " ").replace(")", " ").replace(",", " ").replace("/", " ").split())
    for key, name in _RULES:
        if (key in words) if len(key) <= 3 else (key in low):
            return name
    return "unknown"

"""Reading the structure a query names: typos, plurals, spellings, synonyms, abbreviations."""

import pytest

from ibisagent.data.vocabulary import Vocabulary, key, structures_of_queries, target_phrase

KNOWN = ["kidney", "left kidney", "liver", "left ventricle", "retinal blood vessels", "cell nuclei", "optic disc", "brain tumor",
         "malignant breast tumor", "lungs", "Barrett's esophagus"]  # fmt: skip


@pytest.mark.parametrize(
    "query, phrase",
    [
        ("Segment the kidny.", "kidny"),
        ("Please outline the lungs in this X-ray.", "lungs"),
        ("Is there a brain tumour in this MRI scan? If yes, segment it.", "brain tumour"),
        ("Where is the optic nerve head? Segment it.", "optic nerve head"),
        ("Mark the region of the liver.", "liver"),
        ("kidney", "kidney"),
    ],
)
def test_target_phrase_cuts_the_named_thing_out_of_the_query(query, phrase):
    assert target_phrase(query) == phrase


def test_key_normalises_case_spelling_plurals_and_apostrophes():
    assert key("Kidneys") == key("kidney") == "kidney"
    assert key("cell nuclei") == key("cell nucleus") == "cell nucleus"
    assert key("Barrett's oesophagus") == key("Barrett's esophagus") == "barrett esophagus"
    assert key("brain tumours") == "brain tumor"


@pytest.mark.parametrize(
    "query, structure, how",
    [
        ("Segment the kidney.", "kidney", "exact"),
        ("Segment the kidneys.", "kidney", "exact"),
        ("Segment the kidny.", "kidney", "spelling"),
        ("Segment the livre.", "liver", "spelling"),
        ("Segment the renal parenchyma.", "kidney", "synonym"),
        ("Segment the left renal parenchyma.", "left kidney", "synonym"),
        ("Segment the right renal parenchyma.", "kidney", "synonym"),  # no "right kidney" known: the kidney
        ("Segment the LV.", "left ventricle", "synonym"),
        ("Segment the retinal vessels.", "retinal blood vessels", "synonym"),
        ("Segment the nucleus.", "cell nuclei", "synonym"),
        ("Where is the optic nerve head?", "optic disc", "synonym"),
        ("Segment the glioma.", "brain tumor", "synonym"),
        ("Segment the brain tumour.", "brain tumor", "exact"),
        ("Segment the Barrett's oesophagus.", "Barrett's esophagus", "exact"),
        ("Segment the breast mass.", "malignant breast tumor", "synonym"),
    ],
)
def test_known_structures_under_other_words_resolve(query, structure, how):
    res = Vocabulary(KNOWN).resolve(query)
    assert (res.structure, res.how) == (structure, how), res
    assert res.reworded == (how != "exact")


@pytest.mark.parametrize(
    "query", ["Segment the giraffe.", "xqzv plmok", "Segment the lesion.", "Segment the organ that filters blood."]
)
def test_unknown_or_generic_names_are_not_forced_onto_a_known_structure(query):
    assert Vocabulary(KNOWN).resolve(query).structure is None


def test_structure_names_come_from_the_plain_training_queries_only():
    texts = ["Segment the kidney.", "Segment the kidney in this CT image.", "Segment the organ that filters blood.",
             "Please segment the liver.", "Segment the cell nuclei."]  # fmt: skip
    assert structures_of_queries(texts) == ["cell nuclei", "kidney"]

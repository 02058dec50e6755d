"""Fixtures for the data-layer tests: the MNI152 volume (nilearn, offline) and a bad-data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def mni():
    """(T1 template, brain mask) nibabel images of the MNI152 2009 template (197 x 233 x 189, RAS)."""
    datasets = pytest.importorskip("nilearn.datasets")
    return datasets.load_mni152_template(), datasets.load_mni152_brain_mask()


@pytest.fixture(scope="session")
def mni_files(mni, tmp_path_factory):
    """The template and brain mask written as .nii.gz files."""
    import nibabel as nib

    d = tmp_path_factory.mktemp("mni")
    t1, brain = mni
    nib.save(t1, d / "t1.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(brain.dataobj).astype(np.uint8), brain.affine), d / "brain.nii.gz")
    return d / "t1.nii.gz", d / "brain.nii.gz"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The development set (../shared/data); tests that need it skip where it is absent."""
    return SHARED

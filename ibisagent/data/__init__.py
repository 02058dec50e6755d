"""Datasets: samples of (image, target name, mask, modality, origin)."""

from ibisagent.data.pairs import Sample, read_pairs_csv

__all__ = ["Sample", "read_pairs_csv"]

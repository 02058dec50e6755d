"""Training: the segmentation tool's click path, and (with extras) the agent policies."""

from pathlib import Path

# Image embeddings cached on disk, shared by `train tool`, `train compact` and the benchmarks.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ibisagent" / "embeddings"

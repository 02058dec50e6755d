"""Reading a training run's YAML config (`ibisagent train sft|rl --config FILE`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ibisagent.errors import IbisInputError


def read_run_yaml(cls: type, path: str | Path, overrides: dict) -> dict:
    """The keyword arguments of run dataclass `cls` from the YAML mapping at `path`, with the
    non-None `overrides` on top. One-line IbisInputError (naming `path`) for a missing file,
    invalid YAML, a non-mapping, unknown keys or a missing 'model'."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise IbisInputError(path, "no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise IbisInputError(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise IbisInputError(path, "the config must be a mapping of keys to values")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise IbisInputError(path, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if "model" not in raw:
        raise IbisInputError(path, "the config needs 'model' (a local Qwen2.5-VL / Qwen3-VL folder)")
    return raw

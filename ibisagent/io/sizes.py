"""How many bytes a value holds, for memory bounds (app stores, undo states)."""

from __future__ import annotations

from typing import Any


def nbytes_of(value: Any) -> int:
    """Bytes of a numpy array or torch tensor (0 for anything else)."""
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "nelement"):
        return int(value.element_size() * value.nelement())
    return 0

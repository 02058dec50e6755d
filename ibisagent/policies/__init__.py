"""Policies: who decides the next click (oracle, people, learned models)."""

from __future__ import annotations

from ibisagent.policies.base import Policy


def make_policy(spec: str = "oracle", **kwargs) -> Policy:
    """A policy from a short spec. Known: "oracle" (needs the reference mask; kwargs:
    iou_threshold). Learned policies ("compact", "hf:PATH", "openai:URL") register here as
    they land."""
    from ibisagent.errors import IbisInputError

    name, _, rest = spec.partition(":")
    if name == "oracle":
        from ibisagent.policies.oracle import OraclePolicy

        return OraclePolicy(**kwargs)
    raise IbisInputError(spec, "unknown policy; available: oracle")


__all__ = ["Policy", "make_policy"]

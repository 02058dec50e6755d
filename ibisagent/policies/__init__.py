"""Policies: who decides the next click (oracle, people, learned models)."""

from __future__ import annotations

from ibisagent.policies.base import Policy


def make_policy(spec: str = "oracle", **kwargs) -> Policy:
    """A policy from a short spec. Known: "oracle[:IOU]" (needs the reference mask; kwargs:
    iou_threshold); baselines "centre", "random[:K]" (kwargs: seed), "box" (needs the
    reference mask; see policies/baselines.py). Learned policies ("compact", "hf:PATH",
    "openai:URL") register here as they land."""
    from ibisagent.errors import IbisInputError

    name, _, rest = spec.partition(":")
    if name == "oracle":
        from ibisagent.policies.oracle import OraclePolicy

        if rest:
            threshold = _number(spec, rest, float)
            if not 0.0 < threshold <= 1.0:
                raise IbisInputError(spec, "the oracle's IoU threshold must be in (0, 1]")
            kwargs.setdefault("iou_threshold", threshold)
        return OraclePolicy(**kwargs)
    if name in ("centre", "center", "random", "box"):
        from ibisagent.policies import baselines

        if name == "random":
            return baselines.RandomClickPolicy(n_clicks=_number(spec, rest or "1", int), **kwargs)
        if rest:
            raise IbisInputError(spec, f"the {name} baseline takes no argument")
        return baselines.BoxPromptPolicy() if name == "box" else baselines.CentreClickPolicy()
    raise IbisInputError(spec, "unknown policy; available: oracle[:IOU], centre, random[:K], box")


def _number(spec: str, text: str, kind: type):
    from ibisagent.errors import IbisInputError

    try:
        return kind(text)
    except ValueError:
        raise IbisInputError(spec, f"expected a {kind.__name__} after ':', got {text!r}") from None


__all__ = ["Policy", "make_policy"]

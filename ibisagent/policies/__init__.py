"""Policies: who decides the next click (oracle, people, learned models)."""

from __future__ import annotations

from ibisagent.policies.base import Policy


def make_policy(spec: str = "oracle", **kwargs) -> Policy:
    """A policy from a short spec. Known: "oracle[:IOU]" (needs the reference mask; kwargs:
    iou_threshold); baselines "centre", "salient", "random[:K]" (kwargs: seed), "box" (needs the
    reference mask; see policies/baselines.py); "hf:PATH" (a local Qwen-VL checkpoint or LoRA
    adapter; kwargs: see vlm_hf.HFPolicy), "openai:URL[#MODEL]" (an OpenAI-compatible server;
    kwargs: see openai_compat.OpenAIPolicy), "human" (kwargs: ask= or commands=), "compact[:PATH]"
    (the shipped text-to-click policy, see compact.py)."""
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
    if name in ("centre", "center", "salient", "random", "box"):
        from ibisagent.policies import baselines

        if name == "random":
            return baselines.RandomClickPolicy(n_clicks=_number(spec, rest or "1", int), **kwargs)
        if rest:
            raise IbisInputError(spec, f"the {name} baseline takes no argument")
        if name == "salient":
            return baselines.SalientClickPolicy()
        return baselines.BoxPromptPolicy() if name == "box" else baselines.CentreClickPolicy()
    if name == "hf":
        from ibisagent.policies.vlm_hf import HFPolicy

        if not rest:
            raise IbisInputError(spec, "give the model folder: hf:PATH (a checkpoint or a LoRA adapter)")
        return HFPolicy(rest, **kwargs)
    if name == "openai":
        from ibisagent.policies.openai_compat import OpenAIPolicy

        url, _, model = rest.partition("#")
        if not url:
            raise IbisInputError(spec, "give the server: openai:URL[#MODEL], e.g. openai:http://localhost:8000/v1")
        return OpenAIPolicy(url, model=model or None, **kwargs)
    if name == "compact":
        from ibisagent.policies.compact import CompactPolicy

        return CompactPolicy(weights=rest or None, **kwargs)
    if name == "human":
        from ibisagent.policies.human import HumanPolicy

        return HumanPolicy(**kwargs)
    raise IbisInputError(
        spec,
        "unknown policy; available: compact[:PATH], oracle[:IOU], centre, salient, random[:K], box, hf:PATH, openai:URL[#MODEL], human",
    )


def known_structures(spec: str = "compact") -> list[str]:
    """The structure names the compact policy of `spec` ("compact[:PATH]") was trained on: what
    `segment --list-structures` prints and the web app lists. Other kinds cannot list theirs
    (IbisInputError)."""
    from ibisagent.errors import IbisInputError

    if spec.partition(":")[0] != "compact":
        raise IbisInputError(spec, "only the compact policy lists its structures (compact[:PATH])")
    return make_policy(spec).known_structures()


def _number(spec: str, text: str, kind: type):
    from ibisagent.errors import IbisInputError

    try:
        return kind(text)
    except ValueError:
        raise IbisInputError(spec, f"expected a {kind.__name__} after ':', got {text!r}") from None


__all__ = ["Policy", "known_structures", "make_policy"]

"""Promptable segmentation tools: embed once, answer many click prompts."""

from __future__ import annotations

from ibisagent.tools.base import Embedding, EmbeddingCache, SegmentationTool, ToolResult


def check_update_rule(spec: str, update: str) -> None:
    """Refuse an update rule other than "global" for a tool that has none (only LiteMedSAM has)."""
    from ibisagent.errors import IbisInputError

    if update != "global" and not spec.startswith("litemedsam"):
        raise IbisInputError("--update", f"the {update} update rule is LiteMedSAM's; {spec} updates globally")


def make_tool(spec: str = "litemedsam", **kwargs) -> SegmentationTool:
    """Build a tool from a short spec: "litemedsam", "litemedsam:original", "litemedsam:PATH.pt",
    "sam2:CONFIG.yaml:CHECKPOINT" / "medsam2:..." (the optional sam2 package; kwargs: see
    tools.sam2.SAM2Tool), or "http://host:port" (an `ibisagent serve` tool server; kwargs: see
    tools.remote.RemoteTool)."""
    from ibisagent.errors import IbisInputError

    if spec.startswith(("http://", "https://")):
        from ibisagent.tools.remote import RemoteTool

        kwargs.pop("strategy", None)  # the server's own setting
        kwargs.pop("threads", None)
        return RemoteTool(url=spec, **kwargs)
    name, _, rest = spec.partition(":")
    if name == "litemedsam":
        from ibisagent.tools.litemedsam import LiteMedSAMTool

        if rest:
            kwargs.setdefault("weights", rest)
        return LiteMedSAMTool(**kwargs)
    if name in ("sam2", "medsam2"):
        # "sam2:CONFIG.yaml:CHECKPOINT" (split after ".yaml:", so paths may hold ':'), or "sam2" with
        # config=, checkpoint= kwargs. "medsam2" is the same code under another name.
        from ibisagent.tools.sam2 import SAM2Tool, parse_spec

        if rest:
            config, checkpoint = parse_spec(rest)
            kwargs.setdefault("config", config)
            kwargs.setdefault("checkpoint", checkpoint)
        return SAM2Tool(alias=name, **kwargs)
    raise IbisInputError(
        spec, "unknown tool; use litemedsam[:clicks|original|PATH], sam2:CONFIG.yaml:CHECKPOINT or http://HOST:PORT"
    )


__all__ = ["Embedding", "EmbeddingCache", "SegmentationTool", "ToolResult", "check_update_rule", "make_tool"]

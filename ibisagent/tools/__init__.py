"""Promptable segmentation tools: embed once, answer many click prompts."""

from __future__ import annotations

from ibisagent.tools.base import Embedding, EmbeddingCache, SegmentationTool, ToolResult


def make_tool(spec: str = "litemedsam", **kwargs) -> SegmentationTool:
    """Build a tool from a short spec: "litemedsam", "litemedsam:original", "litemedsam:PATH.pt", or
    "http://host:port" (an `ibisagent serve` tool server; kwargs: see tools.remote.RemoteTool)."""
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
        raise IbisInputError(spec, "the SAM2/MedSAM2 backend is not available yet; use litemedsam or a tool server")
    raise IbisInputError(spec, "unknown tool; use litemedsam[:clicks|original|PATH] or http://HOST:PORT")


__all__ = ["Embedding", "EmbeddingCache", "SegmentationTool", "ToolResult", "make_tool"]

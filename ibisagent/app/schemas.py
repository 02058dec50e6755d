"""Request and response bodies of the REST API (pydantic; they are the OpenAPI schema).

Coordinates: a click is [x, y] with x = column and y = row, either pixels of the original image
or normalised to [0, 1] (x / W, y / H); `coords` says which ("auto": all values in [0, 1] means
normalised). Labels: 1 = positive (target), 0 = negative (background). Masks travel as RLE
({"size": [H, W], "counts": [...]}, row-major runs starting with background; ibisagent.io.rle)
or as a base64 PNG string (white = target).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MaskIn = dict[str, Any] | str
Output = Literal["rle", "png", "overlay"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolRequest(_Strict):
    """One tool call: all clicks so far (in order) and, optionally, the previous state."""

    image_id: str | None = Field(None, description="id from POST /v1/images (or upload `image` in multipart)")
    points: list[tuple[float, float]] = Field(default_factory=list, description="clicks [[x, y], ...]")
    labels: list[int] = Field(default_factory=list, description="one per point: 1 positive, 0 negative")
    coords: Literal["auto", "px", "norm"] = "auto"
    box: tuple[float, float, float, float] | None = Field(
        None, description="a box prompt [x0, y0, x1, y1] in pixels of the original image"
    )
    prev_logits_id: str | None = Field(None, description="logits_id of an earlier response on this image")
    prev_mask: MaskIn | None = Field(None, description="a mask to refine (used when prev_logits_id is absent)")
    reference_mask: MaskIn | None = Field(None, description="if given, the response reports IoU against it")
    outputs: list[Output] = Field(default_factory=lambda: ["rle"], description="what to return for the mask")


class SegmentRequest(_Strict):
    """One agent episode on an image: a query, a policy, optional reference and starting masks."""

    image_id: str | None = None
    query: str = Field(..., min_length=1, max_length=1000)
    policy: str | None = Field(
        None,
        max_length=64,
        description="the name of a policy this server runs (GET /healthz lists them); default: its first, "
        "the shipped compact agent unless the operator chose otherwise. The oracle needs reference_mask.",
    )
    policy_options: dict[str, Any] = Field(
        default_factory=dict, description="only the keys the operator allows (GET /healthz: policy_options)"
    )
    reference_mask: MaskIn | None = Field(None, description="ground truth: IoU per step; the oracle needs it")
    init_mask: MaskIn | None = Field(None, description="an existing mask to refine")
    max_steps: int | None = Field(None, ge=1)
    outputs: list[Output] = Field(default_factory=lambda: ["rle"], description="for the final mask")
    step_overlays: bool = Field(False, description="include a JPEG overlay (click drawn) for every step")


class MaskRequest(_Strict):
    """A mask file (multipart field `mask`) for an uploaded image."""

    image_id: str


class SliceRequest(_Strict):
    """A slice of an uploaded volume: `index` along `axis`, windowed (CT presets in HU, or percentile)."""

    axis: Literal["axial", "coronal", "sagittal"] = "axial"
    index: int | None = Field(None, ge=0, description="slice index; default the middle slice")
    window: str = Field("auto", description="auto, percentile, abdomen, liver, lung, bone, brain")


class VolumeMaskRequest(SliceRequest):
    """A slice's mask to write into a NIfTI on the volume's grid (zeros elsewhere)."""

    mask: MaskIn


class ImageResponse(BaseModel):
    image_id: str
    width: int
    height: int
    name: str
    embed_ms: float
    cached: bool


class SliceResponse(ImageResponse):
    axis: str
    index: int
    window: str


class MaskOut(BaseModel):
    area: int = Field(..., description="mask pixels")
    rle: dict[str, Any] | None = None
    png: str | None = Field(None, description="base64 PNG, 0/255")
    overlay: str | None = Field(None, description="base64 JPEG: render_overlay with clicks and contour")


class ToolResponse(BaseModel):
    image_id: str
    mask: MaskOut
    score: float | None = Field(None, description="the tool's predicted IoU; null when no click was made")
    iou: float | None = None
    clicks: list[tuple[int, int, int]] = Field(..., description="(x, y, label) pixels as used")
    logits_id: str | None
    tool_ms: float
    total_ms: float


class StepOut(BaseModel):
    index: int
    kind: str
    click: tuple[int, int, int] | None
    reasoning: str | None
    answer: str | None
    error: str | None
    iou: float | None
    score: float | None
    area: int
    overlay: str | None = None


class SegmentResponse(BaseModel):
    image_id: str
    query: str
    policy: str
    stop_reason: str | None
    answer: str | None
    steps: list[StepOut]
    mask: MaskOut
    iou: float | None
    clicks: list[tuple[int, int, int]]
    logits_id: str | None
    episode: dict[str, Any] = Field(..., description="the Episode record (ibisagent.env.episode), as JSON")
    session_id: str | None = Field(None, description="continue this episode by hand: POST /v1/sessions/{id}/act")
    total_ms: float

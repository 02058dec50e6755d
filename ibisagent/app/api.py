"""The FastAPI application: REST API under /v1, the web page at /, OpenAPI docs at /docs.

Every refusal is a 4xx (or 507) with {"error": "<one line>"}: 400 malformed/invalid input, 401 a
missing or wrong token, 403 a cross-origin request, 404 unknown ids, 413 too large, 415 wrong file
type, 409 a teach job already running, 422 a body that does not match the schema, 429 busy, 507 no
room for another taught policy within the memory bound; 403 also answers a feature the operator did
not enable (teaching). (A Host not allowed gets starlette's 400.)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ibisagent import __version__
from ibisagent.app.config import ServeConfig
from ibisagent.app.errors import ApiError, bad_request, unsupported
from ibisagent.app.limits import BodyLimit
from ibisagent.app.requests import body_doc, one_line, read_request
from ibisagent.app.schemas import (
    ImageResponse,
    MaskRequest,
    Output,
    SegmentRequest,
    SegmentResponse,
    SliceRequest,
    SliceResponse,
    ToolRequest,
    ToolResponse,
    VolumeMaskRequest,
)
from ibisagent.app.security import AccessGuard
from ibisagent.app.service import Service
from ibisagent.app.sessions import ActRequest, ReferenceRequest, SessionRequest, SessionResponse
from ibisagent.errors import IbisInputError
from ibisagent.tools.base import SegmentationTool

PAGE = Path(__file__).parent / "static" / "index.html"
MASK_FILES = ("prev_mask", "reference_mask", "init_mask")


def create_app(config: ServeConfig | None = None, tool: SegmentationTool | None = None) -> FastAPI:
    """The server. `tool` (optional) is an already-built tool to share (tests pass theirs)."""
    config = config or ServeConfig()
    service = Service(config, tool)
    app = FastAPI(
        title="ibisagent",
        version=__version__,
        description="Segment biomedical objects from a text query by reasoning and clicking; "
        "correct the agent with clicks. Errors are {'error': message} with a 4xx status.",
    )
    app.state.service = service
    app.state.config = config
    # outermost last: the Host check, CORS (only if origins are configured), token and Origin, body limits
    app.add_middleware(BodyLimit, max_bytes=config.max_upload_bytes, timeout_s=config.body_timeout_s)
    app.add_middleware(AccessGuard, token=config.token, origins=tuple(config.cors_origins))
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-filename"],
        )
    if "*" not in config.allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(config.allowed_hosts))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(IbisInputError)
    async def _input_error(request: Request, exc: IbisInputError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": one_line(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(MemoryError)
    async def _memory(request: Request, exc: MemoryError):  # a request the bounds let through but RAM did not
        return JSONResponse({"error": "request needs more memory than the server has free"}, status_code=413)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug: still one line, never a traceback
        return JSONResponse({"error": f"internal error ({exc.__class__.__name__})"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness plus the tool, limits and cache state."""
        return {
            "status": "ok",
            "version": __version__,
            "tool": service.tool.name,
            "images": len(service.images),
            "embeddings_cached": len(service.tool.cache),
            "policies": service.policies.names,
            "policy_options": list(config.policy_options),
            "teach": config.teach_dir is not None,
            "token_required": bool(config.token),
            "memory_bytes": service.memory(),
            "memory_bounds": {**config.memory_budget(), "one_session": config.max_session_bytes},
            "timings": service.tool.timings.snapshot(),
            "limits": {
                "max_upload_bytes": config.max_upload_bytes,
                "max_pixels": config.max_pixels,
                "max_steps": config.max_steps,
                "max_clicks": config.max_clicks,
                "workers": config.workers,
                "header_timeout_s": config.header_timeout_s,
                "body_timeout_s": config.body_timeout_s,
                "keep_alive_s": config.keep_alive_s,
                "max_connections": config.max_connections,
            },
            "volumes": _volumes_available(),
        }

    @app.get("/v1/policies/{name}/structures")
    async def policy_structures(name: str) -> dict:
        """The structures a compact policy this server runs knows (as `segment --list-structures`);
        other words for them, typos and plurals are read too. 400 for other policies."""
        return {"policy": name, "structures": await service.slots.run(service.policies.structures, name)}

    @app.post("/v1/images", response_model=ImageResponse, openapi_extra=_upload_doc("image"))
    async def upload_image(request: Request) -> dict:
        """Upload an image (PNG/JPEG/TIFF/BMP; multipart field `image`, or the raw bytes as the body).
        Returns its id (a content hash: the same pixels give the same id) after computing the embedding."""
        data, name = await _upload(request, "image")
        return await service.slots.run(service.add_image, data, name)

    @app.post(
        "/v1/tool/segment",
        response_model=ToolResponse,
        openapi_extra=body_doc(ToolRequest, ("image", *MASK_FILES[:2])),
    )
    async def tool_segment(request: Request) -> dict:
        """The segmentation tool: all clicks so far (+ previous logits or mask) -> mask and score.
        The service an RL reward or an annotation tool calls; chain calls with `prev_logits_id`."""
        req, files = await read_request(request, ToolRequest, ("image", "prev_mask", "reference_mask"))
        return await service.slots.run(service.tool_call, req, files)

    @app.post(
        "/v1/segment",
        response_model=SegmentResponse,
        openapi_extra=body_doc(SegmentRequest, ("image", *MASK_FILES[1:])),
    )
    async def segment(request: Request) -> dict:
        """Run an agent policy on an image and a query: every step's click, reasoning and IoU, the final mask."""
        req, files = await read_request(request, SegmentRequest, ("image", "reference_mask", "init_mask"))
        return await service.slots.run(service.segment, req, files)

    @app.post("/v1/sessions", response_model=SessionResponse)
    async def open_session(req: SessionRequest) -> dict:
        """Open an interactive episode on an uploaded image: a person clicks through the human policy
        (`POST /v1/sessions/{id}/act`). `POST /v1/segment` also returns a session continuing its episode."""
        return await service.slots.run(service.sessions.open, req)

    @app.post("/v1/sessions/{session_id}/act", response_model=SessionResponse)
    async def session_act(session_id: str, req: ActRequest) -> dict:
        """One person action ("p X,Y", "n X,Y" normalised, or "stop"): HumanPolicy turns it into a
        protocol turn and the environment executes it; returns the new mask and the step."""
        return await service.slots.run(service.sessions.act, session_id, req)

    @app.post("/v1/sessions/{session_id}/undo", response_model=SessionResponse)
    async def session_undo(session_id: str, req: _Outputs | None = None) -> dict:
        """Back to the state before the last person action (or before the agent's run)."""
        outputs = (req or _Outputs()).outputs
        return await service.slots.run(service.sessions.undo, session_id, outputs)

    @app.post("/v1/sessions/{session_id}/reset", response_model=SessionResponse)
    async def session_reset(session_id: str, req: _Outputs | None = None) -> dict:
        """Back to the session's start (the image with no mask, or the mask it was opened with)."""
        outputs = (req or _Outputs()).outputs
        return await service.slots.run(service.sessions.reset, session_id, outputs)

    @app.post("/v1/sessions/{session_id}/reference", response_model=SessionResponse)
    async def session_reference(session_id: str, req: ReferenceRequest) -> dict:
        """Set (or clear) the reference mask: IoU of the current mask and of later steps."""
        return await service.slots.run(service.sessions.set_reference, session_id, req)

    @app.get("/v1/sessions/{session_id}/episode")
    async def session_episode(session_id: str) -> dict:
        """The session's Episode record (ibisagent.env.episode): agent and person steps as protocol turns;
        meta.person_steps lists the steps a person made."""
        return service.sessions.episode(session_id)

    @app.post("/v1/masks", openapi_extra=body_doc(MaskRequest, ("mask",)))
    async def upload_mask(request: Request) -> dict:
        """Check a mask file against an image (same size) and return it as RLE, to send with later
        requests (reference_mask, prev_mask, init_mask) without re-uploading the file."""
        req, files = await read_request(request, MaskRequest, ("mask",))
        if "mask" not in files:
            raise bad_request("multipart body has no `mask` file field")
        return await service.slots.run(service.mask_rle, req.image_id, files["mask"])

    @app.post("/v1/volumes", openapi_extra=_upload_doc("volume"))
    async def upload_volume(request: Request) -> dict:
        """Upload a volume: a NIfTI file (.nii, .nii.gz) or one DICOM file (multipart field `volume`, or
        the raw bytes). Returns its id, the slice count per axis and the window presets."""
        data, name = await _upload(request, "volume")
        return await service.slots.run(service.add_volume, data, name)

    @app.post("/v1/volumes/{volume_id}/slice", response_model=SliceResponse, openapi_extra=body_doc(SliceRequest, ()))
    async def volume_slice(volume_id: str, request: Request) -> dict:
        """Window a slice of an uploaded volume into an image (stored and embedded like POST /v1/images)."""
        req, _ = await read_request(request, SliceRequest, ())
        return await service.slots.run(service.volume_slice, volume_id, req)

    @app.post("/v1/volumes/{volume_id}/mask", openapi_extra=body_doc(VolumeMaskRequest, ()))
    async def volume_mask(volume_id: str, request: Request) -> Response:
        """A slice's mask as NIfTI (.nii.gz, uint8, 1 = target) with the input volume's affine and grid."""
        req, _ = await read_request(request, VolumeMaskRequest, ())
        data = await service.slots.run(service.volume_mask, volume_id, req)
        disposition = f'attachment; filename="mask_{req.axis}.nii.gz"'
        return Response(data, media_type="application/gzip", headers={"content-disposition": disposition})

    from ibisagent.app.annotate import mount as mount_annotator
    from ibisagent.app.teaching import mount as mount_teaching

    ann = mount_annotator(app, service)  # the annotator page's static files, volume planes, masks, export
    mount_teaching(app, service, ann)  # teaching the compact policy from accepted masks (when enabled)
    return app


async def _upload(request: Request, field: str) -> tuple[bytes, str]:
    """(bytes, filename) of a file upload: multipart field `field`, or the raw body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        _, files = await read_request(request, _Empty, (field,))
        if field not in files:
            raise bad_request(f"multipart body has no `{field}` file field")
        return files[field], str(files.get(f"{field}_name", field))
    if ctype.startswith("image/") or ctype in ("application/octet-stream", "application/gzip", "application/dicom"):
        return await request.body(), request.headers.get("x-filename", field)
    raise unsupported(f"content type {ctype!r}: send multipart/form-data with `{field}`, or the file's bytes")


def _upload_doc(field: str) -> dict:
    binary = {"type": "string", "format": "binary"}
    form = {"type": "object", "properties": {field: binary}}
    content = {"multipart/form-data": {"schema": form}, "application/octet-stream": {"schema": binary}}
    return {"requestBody": {"required": True, "content": content}}


def _volumes_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("nibabel", "pydicom"))


class _Empty(BaseModel):
    pass


class _Outputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outputs: list[Output] = Field(default_factory=lambda: ["rle", "overlay"])

"""Reading a request body: JSON, or multipart with file parts, into a validated pydantic model;
every failure is a one-line 4xx (`ApiError`)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from ibisagent.app.errors import ApiError, bad_request, unsupported


def one_line(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def body_doc(model: type[BaseModel], files: tuple[str, ...]) -> dict:
    """OpenAPI requestBody (a route's `openapi_extra`) of a body `read_request` reads: the JSON
    model, or multipart with the same fields plus file parts. Nested models are inlined: pydantic
    refers to them as #/$defs/NAME, which does not resolve inside the OpenAPI document."""
    schema = model.model_json_schema()
    schema = _inline(schema, schema.pop("$defs", {}))
    form = {
        **schema,
        "properties": {**schema["properties"], **{f: {"type": "string", "format": "binary"} for f in files}},
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, "multipart/form-data": {"schema": form}},
        }
    }


def _inline(node, defs: dict):
    """A JSON schema with each {"$ref": "#/$defs/NAME", ...} replaced by that definition (the
    request models nest without cycles)."""
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref", "")
    if ref.startswith("#/$defs/"):
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inline(defs[ref.removeprefix("#/$defs/")], defs), **_inline(rest, defs)}
    return {k: _inline(v, defs) for k, v in node.items()}


async def read_request(request: Request, model: type[BaseModel], file_fields: tuple[str, ...]):
    """(validated model, {file field: bytes, "<field>_name": filename}) from a JSON or multipart body.

    In multipart, text fields map to model fields; values starting with [ or { are parsed as JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    files: dict[str, bytes | str] = {}
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=len(file_fields), max_fields=64)
        except Exception as exc:  # starlette raises several types for a broken multipart body
            raise bad_request(f"malformed multipart body ({getattr(exc, 'detail', exc)})") from None
        fields: dict = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                if key not in file_fields:
                    raise bad_request(f"unexpected file field {key!r}; file fields: {', '.join(file_fields)}")
                files[key] = await value.read()
                files[f"{key}_name"] = Path(value.filename or key).name
            elif key in file_fields:
                raise bad_request(f"{key!r} must be a file upload")
            else:
                text = str(value).strip()
                if text[:1] in ("[", "{"):
                    try:
                        fields[key] = json.loads(text)
                    except (json.JSONDecodeError, RecursionError):
                        raise bad_request(f"{key}: malformed or too deeply nested JSON") from None
                else:
                    fields[key] = text
        try:
            return model.model_validate(fields), files
        except ValidationError as exc:
            raise ApiError(422, one_line(exc)) from None
        except RecursionError:
            raise bad_request("too deeply nested JSON") from None
    if ctype in ("application/json", ""):
        body = await request.body()
        if not body.strip():
            raise bad_request("empty request body; send JSON (application/json) or multipart/form-data")
        try:
            json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("malformed JSON body") from None
        except RecursionError:
            raise bad_request("too deeply nested JSON body") from None
        try:
            return model.model_validate_json(body), files
        except ValidationError as exc:
            raise ApiError(422, one_line(exc)) from None
        except RecursionError:
            raise bad_request("too deeply nested JSON body") from None
    raise unsupported(f"content type {ctype!r}: send application/json or multipart/form-data")

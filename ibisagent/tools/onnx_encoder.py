"""LiteMedSAM's TinyViT image encoder run by ONNX Runtime (or OpenVINO, on the same graph).

On 2 CPU cores ONNX Runtime runs the encoder about 2x faster than eager torch, fused and
channels-last included (`python bench/bench_tool.py` prints both). The graph is exported from
the loaded torch module once and kept in a disk cache keyed by the encoder checkpoint and the
torch version; outputs match torch to ~1e-5. Needs the `fast` extra (onnxruntime, onnx).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path.home() / ".cache" / "ibisagent" / "onnx"


def available() -> bool:
    """True when onnxruntime and onnx are installed (the `fast` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def graph_path(checkpoint: Path, cache_dir: Path | None = None) -> Path:
    import torch

    cache_dir = cache_dir or DEFAULT_DIR
    st = checkpoint.stat()
    key = hashlib.sha1(f"{checkpoint.name}|{st.st_size}|{torch.__version__}|fused-v1".encode()).hexdigest()[:16]
    return cache_dir / f"tinyvit-encoder-{key}.onnx"


def export(encoder, path: Path, side: int) -> None:
    """Write the encoder's ONNX graph (input 1 x 3 x side x side float) atomically."""
    import tempfile
    import warnings

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, side, side)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".onnx.part", delete=False) as fh:
        tmp = Path(fh.name)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer warnings about shape asserts: the input size is fixed
            torch.onnx.export(
                encoder,
                (x,),
                str(tmp),
                opset_version=17,
                dynamo=False,
                input_names=["image"],
                output_names=["features"],
            )
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def openvino_available() -> bool:
    """True when OpenVINO is installed (part of the `fast` extra)."""
    return importlib.util.find_spec("openvino") is not None


PRECISION_ENV = "IBISAGENT_ENCODER_PRECISION"


def encoder_precision() -> str:
    """The encoder precision, "f32" (the default) or "bf16" ($IBISAGENT_ENCODER_PRECISION): OpenVINO then
    runs the encoder in bfloat16 on CPUs that compute it natively (AVX512-BF16 or AMX), about 1.7x
    faster, features about 5% off (the compact policy's held-out IoU 0.556 against 0.562, README)."""
    from ibisagent.errors import IbisInputError

    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "f32"
    if value not in ("f32", "bf16"):
        raise IbisInputError(PRECISION_ENV, f"expected f32 or bf16, got {value!r}")
    return value


def openvino_config(threads: int) -> dict:
    """OpenVINO CPU settings for our graphs: latency mode, fp32 unless `encoder_precision()` says
    bf16 (OpenVINO would pick bf16 by itself on CPUs that have it)."""
    return {
        "INFERENCE_NUM_THREADS": max(1, threads),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": encoder_precision(),
    }


class OnnxEncoder:
    """Callable like the torch encoder: B x 3 x S x S float tensor -> B x 256 x 64 x 64 tensor.

    `runtime`: "onnxruntime", or "openvino", which runs the same graph about 1.4x faster on
    2 cores with the same outputs (fp32 unless $IBISAGENT_ENCODER_PRECISION=bf16, see
    `encoder_precision`; `python bench/bench_runtimes.py` measures both runtimes)."""

    def __init__(
        self,
        encoder,
        checkpoint: Path,
        side: int,
        threads: int,
        cache_dir: Path | None = None,
        runtime: str = "onnxruntime",
    ):
        self.path = graph_path(checkpoint, cache_dir)
        if not self.path.exists():
            export(encoder, self.path, side)
        self.runtime = runtime
        if runtime == "openvino":
            import openvino as ov

            self.compiled = ov.Core().compile_model(str(self.path), "CPU", openvino_config(threads))
            self._run = lambda image: self.compiled([image])[0]
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, threads)
            opts.inter_op_num_threads = 1
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            self._run = lambda image: self.session.run(None, {"image": image})[0]

    @property
    def precision(self) -> str:
        """The precision the encoder computes in: "bf16" only on OpenVINO asked for bf16 on a CPU
        with native bfloat16 (`hardware.native_bf16`; OpenVINO's compiled hint echoes the request
        even where it falls back to f32, so it cannot tell), else "f32"."""
        from ibisagent.hardware import native_bf16

        if self.runtime != "openvino":
            return "f32"
        return "bf16" if encoder_precision() == "bf16" and native_bf16() else "f32"

    def __call__(self, x):
        import torch

        batch = np.ascontiguousarray(x.detach().float().contiguous().numpy())
        out = [np.asarray(self._run(batch[i : i + 1])) for i in range(batch.shape[0])]
        return torch.from_numpy(np.concatenate(out))

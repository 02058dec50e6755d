"""LiteMedSAM's encoder and click decoder on the CPU runtimes at hand: ONNX Runtime against
OpenVINO (the encoder's default when installed; both come with the `fast` extra), same ONNX graphs,
fp32, interleaved runs in one process so that the ratios hold even on a busy machine.

    python bench/bench_runtimes.py [--threads 2] [--runs 10]

Prints median ms per call, the speed-up of OpenVINO over ONNX Runtime, and the largest absolute
difference of their outputs (encoder features, decoder logits).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def timed(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    tool = LiteMedSAMTool(backend="onnx", threads=args.threads)  # exports/caches both graphs
    try:
        import openvino as ov
    except ImportError:
        print("OpenVINO is not installed (pip install openvino): nothing to compare")
        return
    from ibisagent.tools.onnx_encoder import openvino_config

    cfg = openvino_config(args.threads)
    core = ov.Core()
    enc_ov = core.compile_model(str(tool.onnx_encoder.path), "CPU", cfg)
    dec_ov = core.compile_model(str(tool.onnx_decoder.path), "CPU", cfg)

    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 256, 256), dtype=np.float32)
    enc_session = tool.onnx_encoder.session
    enc_feed = {enc_session.get_inputs()[0].name: x}
    feats = enc_session.run(None, enc_feed)[0]
    feed = {
        "features": feats,
        "points": np.array([[[120.0, 130.0], [60.0, 70.0], [140.0, 100.0]]], np.float32),
        "labels": np.array([[1.0, 0.0, 1.0]], np.float32),
        "mask_input": rng.standard_normal((1, 1, 256, 256), dtype=np.float32),
        "has_mask": np.ones(1, np.float32),
    }
    dec_session = tool.onnx_decoder.session
    rows = []
    for name, ort_fn, ov_fn, ref, out in (
        ("encoder", lambda: enc_session.run(None, enc_feed), lambda: enc_ov([x]), feats, lambda: enc_ov([x])[0]),
        (
            "decoder (3 clicks + prior)",
            lambda: dec_session.run(None, feed),
            lambda: dec_ov(feed),
            dec_session.run(None, feed)[0],
            lambda: dec_ov(feed)[0],
        ),
    ):
        t_ort, t_ov = [], []
        for _ in range(3):  # interleave: both see the same load
            t_ort.append(timed(ort_fn, args.runs))
            t_ov.append(timed(ov_fn, args.runs))
        a, b = statistics.median(t_ort), statistics.median(t_ov)
        rows.append((name, a, b, float(np.abs(out() - ref).max())))
    print(f"LiteMedSAM graphs, {args.threads} threads, OpenVINO {ov.__version__}, {cfg['INFERENCE_PRECISION_HINT']}")
    print(f"{'':28}{'ORT ms':>10}{'OpenVINO ms':>13}{'ORT/OV':>9}{'max |diff|':>12}")
    for name, a, b, diff in rows:
        print(f"{name:28}{a:10.1f}{b:13.1f}{a / b:9.2f}{diff:12.2e}")

    # IBISAGENT_ENCODER_PRECISION=bf16: the OpenVINO encoder in bfloat16 against fp32, interleaved,
    # on a real image (bundled demo), whose features' drift is what the policy meets.
    from ibisagent.io.images import load_image
    from ibisagent.tools.litemedsam_model import preprocess

    demo = sorted((Path(__file__).resolve().parents[1] / "ibisagent/assets/demo/images").glob("*.png"))[0]
    x = np.ascontiguousarray(preprocess(load_image(demo))[0].numpy())
    f32 = core.compile_model(str(tool.onnx_encoder.path), "CPU", {**cfg, "INFERENCE_PRECISION_HINT": "f32"})
    bf16 = core.compile_model(str(tool.onnx_encoder.path), "CPU", {**cfg, "INFERENCE_PRECISION_HINT": "bf16"})
    t32, t16 = [], []
    for _ in range(3):
        t32.append(timed(lambda: f32([x]), args.runs))
        t16.append(timed(lambda: bf16([x]), args.runs))
    a, b = statistics.median(t32), statistics.median(t16)
    ref, low = f32([x])[0], bf16([x])[0]
    drift = float(np.abs(low - ref).mean() / np.abs(ref).mean())
    print(
        f"encoder on OpenVINO: fp32 {a:.1f} ms, bf16 {b:.1f} ms ({a / b:.2f}x), mean |diff| / mean |feature| {drift:.3f}"
    )


if __name__ == "__main__":
    main()

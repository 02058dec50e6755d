"""Segmentation tool speed: encoder ms, decoder ms per click (also with the local update rule,
tools/local_update.py, and its ratio to the global rule), and the cost of a 20-click episode
relative to one encoder pass, with and without the embedding cache.

    python bench/bench_tool.py [--weights auto|original|clicks] [--threads 2]

Prints one table; all figures come from one process on the bundled demo images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=20)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.env.env import IbisEnv
    from ibisagent.policies.oracle import OraclePolicy
    from ibisagent.policies.runner import run_episode
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.tools.litemedsam_model import preprocess

    sample = next(s for s in read_pairs_csv(DEMO) if s.structure == "liver")
    image, gt = sample.load()

    def encoder_ms(tool, n=3):
        x, _ = preprocess(image)
        if tool.onnx_encoder is not None:
            run = tool.onnx_encoder
        else:
            if tool.fast_encoder:
                x = x.contiguous(memory_format=torch.channels_last)
            run = tool.net.image_encoder
        with torch.inference_mode():
            run(x)
            times = []
            for _ in range(n):
                t = time.perf_counter()
                run(x)
                times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    from ibisagent.tools import onnx_encoder

    plain = LiteMedSAMTool(weights=args.weights, fast_encoder=False, backend="torch")
    fused = LiteMedSAMTool(weights=args.weights, backend="torch")
    enc_plain, enc_fused = encoder_ms(plain), encoder_ms(fused)
    enc_onnx = enc_ov = None
    if onnx_encoder.available():
        enc_onnx = encoder_ms(LiteMedSAMTool(weights=args.weights, backend="onnx"))
    if onnx_encoder.available() and onnx_encoder.openvino_available():
        enc_ov = encoder_ms(LiteMedSAMTool(weights=args.weights, backend="openvino"))
    fast = LiteMedSAMTool(weights=args.weights)  # the default backend
    enc_fast = encoder_ms(fast)

    emb = fast.embed(image)
    pts = np.array([[300.0, 460.0]])
    fast.predict(emb, pts, np.array([1]))

    def decoder_ms(update):
        fast.update = update
        dec, prev = [], None
        for k in range(10):
            t = time.perf_counter()
            out = fast.predict(emb, np.repeat(pts, k + 1, 0) + np.arange(k + 1)[:, None], np.ones(k + 1), prev)
            dec.append(time.perf_counter() - t)
            prev = out.logits
        fast.update = "global"
        return 1000 * statistics.median(dec)

    dec_ms, dec_local_ms = decoder_ms("global"), decoder_ms("local")

    def episode_s(cache_entries):
        tool = LiteMedSAMTool(weights=args.weights, cache_entries=cache_entries)
        env = IbisEnv(tool, max_steps=args.clicks, repeat_limit=10**6)
        if cache_entries == 0:
            # No cache: every step re-encodes the image, as a tool without embedding reuse would.
            orig_predict = tool.predict

            def predict(_, *a, **k):
                return orig_predict(image, *a, **k)

            tool.predict = predict
        t = time.perf_counter()
        ep = run_episode(env, OraclePolicy(iou_threshold=2.0), image, "Segment the liver.", gt)
        return time.perf_counter() - t, len(ep.clicks)

    with_cache, n1 = episode_s(16)
    without_cache, n2 = episode_s(0)
    one_pass = enc_fast / 1000
    print(f"LiteMedSAM ({fast.weights_name}), {args.threads} threads, image {image.shape[1]}x{image.shape[0]}")
    print(f"{'encoder ms (plain)':<40}{enc_plain:10.0f}")
    print(f"{'encoder ms (fused conv-bn, channels-last)':<40}{enc_fused:10.0f}   speed-up {enc_plain / enc_fused:.2f}x")
    if enc_onnx is not None:
        print(f"{'encoder ms (ONNX Runtime)':<40}{enc_onnx:10.0f}   speed-up {enc_plain / enc_onnx:.2f}x")
    else:
        print("encoder ms (ONNX Runtime): not installed (pip install 'ibisagent[fast]')")
    if enc_ov is not None:
        print(f"{'encoder ms (OpenVINO)':<40}{enc_ov:10.0f}   speed-up {enc_plain / enc_ov:.2f}x")
    runtime = getattr(fast.onnx_encoder, "runtime", "torch")
    print(f"{f'encoder ms (the default: {runtime})':<40}{enc_fast:10.0f}")
    print(f"{'decoder ms per click (median of 10)':<40}{dec_ms:10.0f}")
    print(f"{'  with the local update rule':<40}{dec_local_ms:10.0f}   ratio {dec_local_ms / dec_ms:.2f}x")
    print(f"{f'{n1}-click episode / one default encoder pass':<40}{with_cache / one_pass:10.2f}   (embedding cache on)")
    print(
        f"{f'{n2}-click episode / one encoder pass':<40}{without_cache / one_pass:10.2f}   (no cache: encoder every step)"
    )


if __name__ == "__main__":
    main()

"""Speed of the VLM policies on CPU.

1. The tiny offline Qwen2.5-VL (hf: policy): prompt tokens, generated tokens/s and per-step
   latency for one step, and for a batch of 4 steps (act_batch).
2. The OpenAI-compatible policy against the local mock server answering after DELAY s: per-step
   latency and the policy's own overhead (latency - DELAY), which should be small beside DELAY.

    python bench/bench_vlm.py [--steps 5] [--delay 0.2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def observation(size: int = 512):
    import cv2

    from ibisagent.env.env import Observation
    from ibisagent.env.episode import Episode
    from ibisagent.env.protocol import first_turn_text
    from ibisagent.io.images import load_image

    demo = Path(__file__).resolve().parents[1] / "ibisagent/assets/demo/images/06_CT_abdomen.png"
    img = cv2.resize(load_image(demo), (size, size), interpolation=cv2.INTER_AREA)  # a real CT slice
    q = "Segment the liver"
    return Observation(img, np.zeros((size, size), bool), first_turn_text(q), q, 0, [], img), Episode(q, (size, size))


def bench_hf(steps: int, new_tokens: int) -> None:
    from ibisagent.policies.tiny_vlm import save_tiny_vlm
    from ibisagent.policies.vlm_hf import HFPolicy

    with tempfile.TemporaryDirectory() as tmp:
        path = save_tiny_vlm(Path(tmp) / "tiny")
        pol = HFPolicy(path, max_new_tokens=new_tokens, device="cpu")
        obs, ep = observation()
        pol.act(obs, ep)  # warm-up
        lat, tps = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            pol.act(obs, ep)
            lat.append(time.perf_counter() - t0)
            tps.append(pol.last_stats["new_tokens"] / pol.last_stats["seconds"])
        t0 = time.perf_counter()
        pol.act_batch([(obs, ep)] * 4)
        batch_s = time.perf_counter() - t0
        s = pol.last_stats
        print(
            f"hf tiny qwen2_5_vl (512x512 image, {s['prompt_tokens'] // 4} prompt tokens, {new_tokens} new tokens): "
            f"step {statistics.median(lat) * 1000:.0f} ms median, {statistics.median(tps):.0f} tokens/s; "
            f"batch of 4: {batch_s * 1000:.0f} ms ({s['new_tokens'] / s['seconds']:.0f} tokens/s)"
        )


def bench_openai(steps: int, delay: float) -> None:
    from ibisagent.env.protocol import format_response
    from ibisagent.policies.mock_server import MockChatServer
    from ibisagent.policies.openai_compat import OpenAIPolicy

    reply = format_response("bench", "positive", 0.5, 0.5)
    obs, ep = observation()
    with MockChatServer(lambda body, n: reply, delay=delay) as srv:
        pol = OpenAIPolicy(srv.url, model="m")
        pol.act(obs, ep)
        lat = []
        for _ in range(steps):
            t0 = time.perf_counter()
            pol.act(obs, ep)
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pol.act_batch([(obs, ep)] * 8)
        batch_s = time.perf_counter() - t0
    med = statistics.median(lat)
    print(
        f"openai policy vs mock server (delay {delay * 1000:.0f} ms, 512x512 PNG): step {med * 1000:.0f} ms median, "
        f"our overhead {(med - delay) * 1000:.0f} ms ({100 * (med - delay) / med:.0f}% of the step); "
        f"8 concurrent steps: {batch_s * 1000:.0f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    bench_hf(args.steps, args.new_tokens)
    bench_openai(args.steps, args.delay)


if __name__ == "__main__":
    main()

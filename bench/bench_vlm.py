"""Speed of the VLM policies on CPU.

1. The tiny offline Qwen2.5-VL (hf: policy): prompt tokens, generated tokens/s and per-step
   latency for one step, and for a batch of 4 steps (act_batch).
2. The OpenAI-compatible policy against the local mock server answering after DELAY s: per-step
   latency and the policy's own overhead (latency - DELAY), which should be small beside DELAY;
   each step sends a new image (the original, then overlays of a growing mask), as in a run; also
   8 steps at once (act_batch) and one history-on step that sends all the episode's images.

    python bench/bench_vlm.py [--steps 5] [--delay 0.2] [--threads 1] [--only hf|openai]
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
    from ibisagent.policies.vlm_hf import HFPolicy
    from ibisagent.testing.tiny_vlm import save_tiny_vlm

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


def episode_views(steps: int, size: int = 512):
    """(observation, episode) before each of `steps` + 1 decisions of one episode on a real CT slice:
    the original image first, then the overlay of a mask that grows each step (as in a run)."""
    from ibisagent.env.env import Observation
    from ibisagent.env.episode import StepRecord
    from ibisagent.env.protocol import format_response, refinement_turn_text
    from ibisagent.io.rle import rle_encode
    from ibisagent.overlay import OVERLAY_ALPHA, OVERLAY_COLOR, render_overlay

    obs0, ep = observation(size)
    yy, xx = np.mgrid[:size, :size]
    views = [(obs0, ep)]
    for k in range(1, steps + 1):
        mask = (yy - size * 0.45) ** 2 + (xx - size * 0.35) ** 2 < (size * 0.04 * k) ** 2
        prev = views[-1][1]
        step = StepRecord(k, format_response("bench", "positive", 0.35, 0.45), "positive", mask=rle_encode(mask))
        ep = type(prev)(prev.query, prev.image_size, steps=[*prev.steps, step])
        over = render_overlay(obs0.original, mask, OVERLAY_COLOR, OVERLAY_ALPHA)
        q = obs0.query
        views.append((Observation(over, mask, refinement_turn_text(q), q, k, [], obs0.original), ep))
    return views


def bench_openai(steps: int, delay: float) -> None:
    from ibisagent.env.protocol import format_response
    from ibisagent.policies.openai_compat import OpenAIPolicy
    from ibisagent.testing.mock_chat_server import MockChatServer

    reply = format_response("bench", "positive", 0.5, 0.5)
    views = episode_views(max(steps, 8))
    with MockChatServer(lambda body, n: reply, delay=delay) as srv:
        pol = OpenAIPolicy(srv.url, model="m")
        pol.act(*observation(256))  # warm-up on another image
        lat = []
        for obs, ep in views[:steps]:  # each step a new image: the original, then overlays
            t0 = time.perf_counter()
            pol.act(obs, ep)
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pol.act_batch(views[:8])
        batch_s = time.perf_counter() - t0
        build = []  # the client-side part: render, PNG, base64 (a fresh policy: nothing cached)
        for obs, ep in views[:steps]:
            fresh = OpenAIPolicy(srv.url, model="m")
            t0 = time.perf_counter()
            fresh.request_body(obs, ep)
            build.append(time.perf_counter() - t0)
        hist = OpenAIPolicy(srv.url, model="m", history=True)
        hist_lat = []
        for obs, ep in views[: steps + 1]:  # history on: step k sends k + 1 images
            t0 = time.perf_counter()
            hist.act(obs, ep)
            hist_lat.append(time.perf_counter() - t0)
    med = statistics.median(lat)
    print(
        f"openai policy vs mock server (delay {delay * 1000:.0f} ms, 512x512 PNG, a new image each step): "
        f"step {med * 1000:.0f} ms median, our overhead {(med - delay) * 1000:.0f} ms "
        f"({100 * (med - delay) / med:.0f}% of the step; building the request {statistics.median(build) * 1000:.0f} ms); "
        f"8 concurrent steps: {batch_s * 1000:.0f} ms; "
        f"history on, step {steps + 1} ({steps + 1} images): {hist_lat[-1] * 1000:.0f} ms, "
        f"overhead {(hist_lat[-1] - delay) * 1000:.0f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=("hf", "openai"), help="run one of the two parts")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.only != "openai":
        bench_hf(args.steps, args.new_tokens)
    if args.only != "hf":
        bench_openai(args.steps, args.delay)


if __name__ == "__main__":
    main()

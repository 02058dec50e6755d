"""The segmentation tool in process vs over HTTP (RemoteTool -> `ibisagent serve` on loopback).

    python bench/bench_remote_tool.py                 # G=4 oracle episodes on one CT slice, both ways
    python bench/bench_remote_tool.py --url http://toolhost:8000 --groups 3

A "group" is G episodes on one image (a GRPO group); each episode is the oracle clicking until
IoU 0.9 or `--max-steps`. Reports episodes/s, tool calls/s, p50 / p95 of one call (ms), image
uploads and the server's encoder passes per group (target: 1 per image per group), and checks
that remote masks equal in-process masks.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


def run_groups(tool, image, gt, groups: int, g: int, max_steps: int) -> dict:
    """`groups` x `g` oracle episodes on `image`; the tool's cache is cleared between groups."""
    from ibisagent.env.env import IbisEnv
    from ibisagent.policies import make_policy
    from ibisagent.policies.runner import run_episode

    env, lat, masks = IbisEnv(tool, max_steps=max_steps), [], []
    t0 = time.perf_counter()
    for _ in range(groups):
        tool.cache.clear()
        for _ in range(g):
            ep = run_episode(env, make_policy("oracle:0.9"), image, "Segment the liver.", gt)
            lat += [s.tool_s * 1000 for s in ep.steps if s.click is not None]
            masks.append(ep.final_mask)
    wall = time.perf_counter() - t0
    n = groups * g
    return {"episodes_per_s": n / wall, "calls_per_s": len(lat) / wall, "p50_ms": np.percentile(lat, 50),
            "p95_ms": np.percentile(lat, 95), "calls": len(lat), "masks": masks}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an existing tool server (default: serve one on loopback)")
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--g", type=int, default=4)
    ap.add_argument("--max-steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from ibisagent.io.images import load_image, load_mask
    from ibisagent.tools.litemedsam import LiteMedSAMTool
    from ibisagent.tools.remote import RemoteTool

    image, gt = load_image(DEMO / "images/06_CT_abdomen.png"), load_mask(DEMO / "masks/06_CT_abdomen__liver.png")
    local = LiteMedSAMTool(threads=args.threads)
    a = run_groups(local, image, gt, args.groups, args.g, args.max_steps)
    print(f"in process: {a['episodes_per_s']:.2f} episodes/s, {a['calls_per_s']:.1f} calls/s, "
          f"call p50 {a['p50_ms']:.1f} ms p95 {a['p95_ms']:.1f} ms, encoder passes {local.timings.encoder_calls}")  # fmt: skip
    with contextlib.ExitStack() as stack:
        url = args.url
        if url is None:
            from ibisagent.app.api import create_app
            from ibisagent.app.background import running_server

            url = stack.enter_context(running_server(create_app(tool=LiteMedSAMTool(threads=args.threads))))
        remote = RemoteTool(url=url)
        enc0 = remote.health()["timings"]["encoder_calls"]
        b = run_groups(remote, image, gt, args.groups, args.g, args.max_steps)
        enc = remote.health()["timings"]["encoder_calls"] - enc0
    same = all(np.array_equal(x, y) for x, y in zip(a["masks"], b["masks"]))
    print(f"remote:     {b['episodes_per_s']:.2f} episodes/s, {b['calls_per_s']:.1f} calls/s, "
          f"call p50 {b['p50_ms']:.1f} ms p95 {b['p95_ms']:.1f} ms, uploads {remote.stats['uploads']:.0f} "
          f"for {args.groups} groups of G={args.g}, server encoder passes {enc}, masks identical: {same}")  # fmt: skip


if __name__ == "__main__":
    main()

"""Whole text-to-mask episodes of the shipped compact policy on CPU (issue target: under 1 s
for a 512 x 512 image on 2 cores, encoder once, up to 20 steps; the paper reports 28.7 s per
sample for the 7B agent on a GPU).

    python bench/bench_compact.py [--threads 2] [--repeats 3]

Each bundled demo image is resized to 512 x 512; each episode starts with a fresh tool (so the
encoder runs once inside it) and an already loaded policy (weights and MiniLM load once per
process, like a server or a batch job). Prints per-episode wall time split into encoder, decoder
and policy, and the number of steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=20)
    args = ap.parse_args()

    import cv2
    import torch

    torch.set_num_threads(args.threads)
    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.env.env import IbisEnv
    from ibisagent.policies import make_policy
    from ibisagent.policies.runner import run_episode
    from ibisagent.tools.litemedsam import LiteMedSAMTool

    policy = make_policy("compact")
    samples = read_pairs_csv(DEMO)
    warm = LiteMedSAMTool()
    image0, _ = samples[0].load()
    policy.attach(warm)
    run_episode(IbisEnv(warm, max_steps=2), policy, image0, "Segment the liver.")  # load MiniLM, warm up

    rows = []
    for s in samples:
        image, _ = s.load()
        image = cv2.resize(image, (512, 512), interpolation=cv2.INTER_AREA)
        for _ in range(args.repeats):
            tool = LiteMedSAMTool(cache_entries=2)
            env = IbisEnv(tool, max_steps=args.max_steps)
            t = time.perf_counter()
            ep = run_episode(env, policy, image, f"Segment the {s.structure.replace('_', ' ')}.")
            wall = time.perf_counter() - t
            tm = tool.timings.snapshot()
            rows.append((wall, tm["encoder_s"], tm["decoder_s"], len(ep.steps)))
    walls = [r[0] for r in rows]
    print(f"compact policy, {args.threads} threads, {len(rows)} episodes on 512 x 512 demo images")
    print(f"{'episode wall s (median / max)':<36}{statistics.median(walls):8.2f} / {max(walls):.2f}")
    print(f"{'encoder s per episode (median)':<36}{statistics.median(r[1] for r in rows):8.2f}")
    print(f"{'decoder s per episode (median)':<36}{statistics.median(r[2] for r in rows):8.2f}")
    print(f"{'steps per episode (mean)':<36}{statistics.mean(r[3] for r in rows):8.2f}")
    print(f"{'episodes under 1 s':<36}{sum(w < 1.0 for w in walls):5d} of {len(walls)}")


if __name__ == "__main__":
    main()

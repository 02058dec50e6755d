"""GRPO rollout throughput: episodes per second for G rollouts of one query on one image, and
encoder passes per episode (target: one pass per image per group, whatever G is).

Each group starts with an empty embedding cache (as a new image would), runs G episodes through
`IbisEnv` with the one shared LiteMedSAM tool, one batched generate() per decision step.
Generators:
- tiny: the tiny offline Qwen2.5-VL sampling for real (random weights: malformed text, so an
  episode is one action; measures batched VLM generation + environment);
- scripted: well-formed clicks at seeded random points inside the target, then a stop (K clicks
  per episode, the tool's decoder and the overlays run every step; no VLM cost).

    .venv/bin/python bench/bench_rollout.py --groups 3 --clicks 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ibisagent.env.protocol import format_response
from ibisagent.train.vlm.rollout import GenOut, Task, rollout_episodes

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo"


def demo_task(side: int | None) -> Task:
    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.data.queries import make_query
    from ibisagent.train.vlm.sft_data import shrink

    s = read_pairs_csv(DEMO / "pairs.csv")[0]  # the liver on the abdominal CT slice
    image, gt = shrink(*s.load(), side)
    return Task(image, make_query(s, "referring").text, gt, name=s.id)


class ScriptedClicks:
    """Per call: a click at a random target pixel for each live rollout; a stop after `clicks`."""

    def __init__(self, gt: np.ndarray, clicks: int, seed: int = 0):
        self.ys, self.xs = np.nonzero(gt)
        self.shape, self.clicks, self.calls = gt.shape, clicks, 0
        self.rng = np.random.default_rng(seed)

    def __call__(self, prompts) -> list[GenOut]:
        self.calls += 1
        H, W = self.shape
        out = []
        for _ in prompts:
            if self.calls > self.clicks:
                out.append(GenOut(format_response("done", "stop", answer="Segmented."), 20, False))
                continue
            k = self.rng.integers(len(self.xs))
            out.append(
                GenOut(format_response("aim", "positive", (self.xs[k] + 0.5) / W, (self.ys[k] + 0.5) / H), 30, False)
            )
        return out


def tiny_generator(max_new_tokens: int):
    import torch

    from ibisagent.policies.vlm_hf import load_vlm
    from ibisagent.testing.tiny_vlm import save_tiny_vlm
    from ibisagent.train.vlm.rollout import HFGenerator

    torch.manual_seed(0)
    path = save_tiny_vlm(Path(tempfile.mkdtemp()) / "tiny", "qwen2_5_vl")
    model, processor, _ = load_vlm(path, device="cpu")
    return HFGenerator(model, processor, max_new_tokens=max_new_tokens)


def bench(tool, task: Task, G: int, groups: int, make_gen) -> dict:
    enc, eps, actions, t = 0, 0, 0, 0.0
    for g in range(groups):
        tool.cache.clear()
        before = tool.timings.encoder_calls
        gen = make_gen(g)
        t0 = time.perf_counter()
        outs = rollout_episodes([task], G, gen, tool, {"s_total": (None, 1.0)}, max_actions=20)
        t += time.perf_counter() - t0
        enc += tool.timings.encoder_calls - before
        eps += len(outs)
        actions += sum(o.actions for o in outs)
    return {
        "G": G,
        "episodes": eps,
        "episodes_per_s": eps / t,
        "actions_per_episode": actions / eps,
        "encoder_per_episode": enc / eps,
        "encoder_per_group": enc / groups,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=3, help="groups per setting (a fresh cache each)")
    ap.add_argument("--clicks", type=int, default=5, help="scripted clicks per episode")
    ap.add_argument("--side", type=int, default=256, help="image side in pixels (longer side)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from ibisagent.tools import make_tool

    torch.set_num_threads(args.threads)
    tool = make_tool("litemedsam")
    task = demo_task(args.side)
    print(f"image {task.image.shape[1]}x{task.image.shape[0]} px, query {task.query!r}, torch threads {args.threads}")
    tool.embed(task.image)  # warm-up (first-call set-up is not a rollout cost)
    tiny = tiny_generator(args.max_new_tokens)
    rows = []
    for G in (1, 2, 4, 8):
        rows.append(("scripted", bench(tool, task, G, args.groups, lambda g: ScriptedClicks(task.gt, args.clicks, g))))
    rows.append(("tiny-vlm", bench(tool, task, 4, args.groups, lambda g: tiny)))
    print(f"{'generator':<10}{'G':>3}{'episodes':>10}{'ep/s':>8}{'actions/ep':>12}{'enc/ep':>8}{'enc/group':>11}")
    for name, r in rows:
        print(
            f"{name:<10}{r['G']:>3}{r['episodes']:>10}{r['episodes_per_s']:>8.2f}{r['actions_per_episode']:>12.1f}"
            f"{r['encoder_per_episode']:>8.3f}{r['encoder_per_group']:>11.2f}"
        )


if __name__ == "__main__":
    main()

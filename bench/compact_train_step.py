"""Time one supervised training step of the compact policy's belief net (`train.compact.sft.belief_step`,
the step `train compact` takes) in float32 and under bfloat16 autocast (`CompactTrainConfig.precision`),
each eager and through torch.compile (`CompactTrainConfig.compile`), on random inputs of the real shapes.

    python bench/compact_train_step.py [--threads 2] [--steps 30] [--batch 32]

Prints seconds per step for each setting, the ratios (fp32 over bf16, eager over compiled), the
one-off compile time, and whether `precision="auto"` picks bfloat16 on this CPU (it does where
AMX or AVX512-BF16 is present).
"""

from __future__ import annotations

import argparse
import json
import random
import time


def step_seconds(bf16: bool, steps: int, batch: int, compile: bool = False) -> tuple[float, float]:
    """-> (median seconds per step after warm-up, seconds of the first step)."""
    import torch

    from ibisagent.policies.belief_net import BeliefNet, BeliefNetConfig
    from ibisagent.train.compact.sft import augment, belief_step, compiled_belief

    torch.manual_seed(0)
    net = BeliefNet(BeliefNetConfig(hidden=64, reduce=64)).train()
    forward = compiled_belief(net) if compile else None
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    feats, text = torch.randn(batch, 64, 64, 64), torch.randn(batch, 384)
    target, present = (torch.rand(batch, 1, 64, 64) > 0.8).float(), torch.ones(batch)
    rng, times = random.Random(0), []
    for _ in range(steps):
        t0 = time.perf_counter()
        f, t = augment(feats, target, 4, 0.1, rng)
        belief_step(net, opt, f, text, t, present, bf16, forward)
        times.append(time.perf_counter() - t0)
    return sorted(times[3:])[len(times[3:]) // 2], times[0]  # median, after warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    import torch

    from ibisagent.train.compact.sft import use_bf16

    torch.set_num_threads(args.threads)
    fp32, _ = step_seconds(False, args.steps, args.batch)
    bf16, _ = step_seconds(True, args.steps, args.batch)
    bf16_compiled, first = step_seconds(True, args.steps, args.batch, compile=True)
    print(
        json.dumps(
            {
                "threads": args.threads,
                "batch": args.batch,
                "fp32_s_per_step": round(fp32, 3),
                "bf16_s_per_step": round(bf16, 3),
                "fp32_over_bf16": round(fp32 / bf16, 2),
                "bf16_compiled_s_per_step": round(bf16_compiled, 3),
                "eager_over_compiled": round(bf16 / bf16_compiled, 2),
                "compile_first_step_s": round(first, 1),
                "auto_uses_bf16": use_bf16("auto"),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Replay a synthesized trajectory through the environment: the same responses must give the
same masks and IoUs (the record is an honest trace of what the tool did)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ibisagent.env.env import IbisEnv
from ibisagent.io.images import load_image, load_mask
from ibisagent.io.rle import rle_decode
from ibisagent.synth.records import Trajectory


def replay(traj: Trajectory, tool, root: str | Path) -> list[str]:
    """Differences between `traj` and a fresh run of its responses with `tool` on the files
    under `root` (the synthesis output folder); [] when it reproduces exactly."""
    root = Path(root)
    image = load_image(root / traj.image_file)
    gt = load_mask(root / traj.gt_file, shape=image.shape[:2])
    init = rle_decode(traj.init_mask) if traj.init_mask else None
    env = IbisEnv(tool, max_steps=len(traj.steps) + 1)
    obs, _ = env.reset(image, traj.query, gt_mask=gt, init_mask=init)
    problems = []
    for k, step in enumerate(traj.steps):
        if traj.obs_texts and obs.text != traj.obs_texts[k]:
            problems.append(f"step {step.index}: user text differs")
        obs, *_ = env.step(step.response)
        rec = env.episode.steps[-1]
        if rec.kind != step.kind:
            problems.append(f"step {step.index}: kind {rec.kind} != {step.kind}")
        if step.mask is not None and (
            rec.mask is None or not np.array_equal(rle_decode(rec.mask), rle_decode(step.mask))
        ):
            problems.append(f"step {step.index}: mask differs")
        if step.iou != rec.iou:
            problems.append(f"step {step.index}: IoU {rec.iou} != {step.iou}")
    return problems

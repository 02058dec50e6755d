"""Run one episode: a policy drives the environment until it stops."""

from __future__ import annotations

import time

import numpy as np

from ibisagent.env.env import IbisEnv
from ibisagent.env.episode import Episode
from ibisagent.policies.base import Policy


def run_episode(
    env: IbisEnv,
    policy: Policy,
    image: np.ndarray,
    query: str,
    gt_mask: np.ndarray | None = None,
    init_mask: np.ndarray | None = None,
    image_name: str | None = None,
    on_step=None,
) -> Episode:
    """Reset, then let `policy` act until the episode ends. `on_step(obs, reward, info)` is
    called after every step (for printing or progress)."""
    obs, info = env.reset(image, query, gt_mask=gt_mask, init_mask=init_mask, image_name=image_name)
    policy.attach(env.tool)
    policy.begin(query, gt_mask)
    while True:
        t0 = time.perf_counter()
        response = policy.act(obs, env.episode)
        obs, reward, terminated, truncated, info = env.step(response, policy_s=time.perf_counter() - t0)
        if on_step is not None:
            on_step(obs, reward, info)
        if terminated or truncated:
            return env.episode

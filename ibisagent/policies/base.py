"""The policy interface: an observation (and the episode so far) in, one assistant turn out.

A policy returns the raw text of its turn in the released protocol (`<think>...</think>`
`<action>...</action>` [`<answer>...</answer>`]); the environment parses it with the one
parser. Policies that can batch implement `act_batch`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ibisagent.env.env import Observation
from ibisagent.env.episode import Episode


class Policy(ABC):
    name: str = "policy"
    needs_reference: bool = False  # True for policies that read the reference mask (the oracle)

    def attach(self, tool) -> None:
        """Called by the runner with the environment's segmentation tool; policies that read
        the tool's (cached) image embedding keep it."""

    def begin(self, query: str, gt_mask=None) -> None:
        """Called at reset; the oracle keeps the reference mask here."""

    @abstractmethod
    def act(self, obs: Observation, episode: Episode) -> str: ...

    def act_batch(self, items: list[tuple[Observation, Episode]]) -> list[str]:
        return [self.act(o, e) for o, e in items]

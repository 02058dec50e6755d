"""Policies: who decides the next click (oracle, people, learned models)."""

from ibisagent.policies.base import Policy

__all__ = ["Policy"]

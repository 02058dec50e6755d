"""The IBISAgent MDP: protocol, episode records and the environment (policies and the episode
runner live one layer up, in `ibisagent.policies`)."""

from ibisagent.env.env import IbisEnv, Observation
from ibisagent.env.episode import Episode, StepRecord
from ibisagent.env.protocol import Action, format_response, parse_response

__all__ = ["Action", "Episode", "IbisEnv", "Observation", "StepRecord", "format_response", "parse_response"]

"""Our reward as verl's custom reward function (`reward.custom_reward_function.path` = this file,
`name` = compute_score). All scoring is `ibisagent.rewards`; this module only routes verl's
arguments to it. verl itself is not imported.

Two modes, chosen by `extra_info["ibis_mode"]` (written by `integrations.verl.data`):
- "step" (the released recipe: one action on an expert-prefix state): `solution_str` is the
  action; `rewards.StepScorer` rebuilds the state from the row (image, given mask, clicks in
  force) with the segmentation tool and returns S and its five terms;
- "episode" (the paper's objective, `ToolAgentLoop` + `IbisClickTool`): every click was already
  scored by the environment inside the tool (`extra_info["ibis_step_rewards"]`, from the agent
  loop's extra fields); the final turn, a stop or an unparsable action that the tool never saw,
  is scored here with `rewards.make_env_reward`; the episode's score is the mean per action.

The tool is `$IBISAGENT_TOOL` (default "litemedsam" in process; "http://HOST:PORT" for a shared
tool server, `ibisagent serve`). A tool server that is down raises `ToolServerError`: the batch
fails loudly instead of scoring 0.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ibisagent.env.protocol import REFINEMENT_TEMPLATE, parse_response
from ibisagent.rewards import ROW_KEYS, TERMS, StepScorer, make_env_reward

TURN_MARKER = REFINEMENT_TEMPLATE.split("{query}")[1][-40:]  # the constant tail of a tool reply
_shared: dict[str, Any] = {}
_local = threading.local()
_lock = threading.Lock()


def tool_spec(extra_info: dict | None = None) -> str:
    """The segmentation tool to score with: extra_info["tool"], else $IBISAGENT_TOOL, else litemedsam."""
    return (extra_info or {}).get("tool") or os.environ.get("IBISAGENT_TOOL", "litemedsam")


def _scorer(spec: str) -> tuple[StepScorer, threading.Lock | None]:
    """A StepScorer per thread for a tool server; one shared scorer (and a lock) for an
    in-process tool, which is not thread-safe (verl calls the reward from a thread pool)."""
    from ibisagent.tools import make_tool

    if spec.startswith(("http://", "https://")):
        scorers = _local.__dict__.setdefault("scorers", {})
        if spec not in scorers:
            scorers[spec] = StepScorer(make_tool(spec))
        return scorers[spec], None
    with _lock:
        if spec not in _shared:
            _shared[spec] = StepScorer(make_tool(spec))
    return _shared[spec], _lock


def step_score(solution_str: str, ground_truth: str, extra_info: dict) -> dict[str, float]:
    """S and its terms for one action on the row's expert-prefix state."""
    row = {k: extra_info[k] for k in ROW_KEYS if extra_info.get(k) is not None}
    row["gt_mask_path"] = ground_truth or row.get("gt_mask_path")
    row.setdefault("step", 1)
    scorer, lock = _scorer(tool_spec(extra_info))
    if lock is None:
        terms = scorer.terms(solution_str, row)
    else:
        with lock:
            terms = scorer.terms(solution_str, row)
    return {"score": float(terms["total"]), **{f"s_{k}": float(terms[k]) for k in TERMS}}


def last_turn(solution_str: str, tool_turns: int) -> str:
    """The final assistant turn of a multi-turn response (after the last tool reply)."""
    if tool_turns <= 0:
        return solution_str
    cut = solution_str.rfind(TURN_MARKER)
    return solution_str if cut < 0 else solution_str[cut + len(TURN_MARKER) :]


def episode_score(solution_str: str, extra_info: dict) -> dict[str, float]:
    """Mean per-action S of an agent-loop episode (tool-scored clicks + the final turn)."""
    rewards = [float(r) for r in extra_info.get("ibis_step_rewards") or []]
    final = last_turn(solution_str, len(rewards))
    action = parse_response(final)
    iou = extra_info.get("ibis_final_iou", extra_info.get("prev_iou"))
    if action.kind in ("stop", "invalid"):  # not a tool call: the tool never scored it
        closed = bool(extra_info.get("closed", False))
        reward_fn = make_env_reward(extra_info.get("answer"), closed)
        ctx = {"action": action, "prev_mask": None, "mask": None, "gt": None, "response": final}
        rewards.append(reward_fn({**ctx, "prev_iou": iou, "iou": iou, "step": len(rewards) + 1}))
    out = {"score": sum(rewards) / len(rewards) if rewards else 0.0, "actions": float(len(rewards))}
    out["final_iou"] = float(iou) if iou is not None else 0.0
    return out


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None, **kwargs
) -> dict[str, float]:
    """verl's reward function: {"score": S, ...terms or episode facts} for one rollout."""
    extra_info = dict(extra_info or {})
    if extra_info.get("ibis_tool_error"):
        raise RuntimeError(f"the segmentation tool failed during the rollout: {extra_info['ibis_tool_error']}")
    if extra_info.get("ibis_mode") == "episode":
        return episode_score(solution_str, extra_info)
    return step_score(solution_str, ground_truth, extra_info)

"""Our environment as a verl tool, for `ToolAgentLoop` (multi-turn GRPO over whole episodes).

verl's loop generates an assistant turn, asks the configured tool parser for tool calls, runs
them, appends the tool's reply (text and images) and generates again, until a turn has no tool
call or a turn limit is reached. Here:
- the `ibis` parser (`IbisActionParser`, registered on import) keeps the released text protocol:
  a turn whose `<action>` is a click (or `Discard Mask`) becomes one call of `ibis_click` with
  the whole turn as its argument; a `Terminate` (or an unparsable turn) has no call, so the
  episode ends there and `integrations.verl.reward` scores that final turn;
- `IbisClickTool.execute` steps `IbisEnv` (the real tool, in process or a tool server) with the
  turn and replies with the overlay image (at most `max_pixels`) and the refinement-turn text.
  The environment scores each action with `rewards.make_env_reward`; the step rewards, IoUs and
  the final IoU go into the loop's extra fields, which verl hands to the reward function.
verl creates and releases a tool instance around every call, so an episode's state is kept per
trajectory (`agent_data.request_id`), bounded by an LRU of `max_episodes`.

Tool config (configs/ibis_tools.yaml): tool ("litemedsam" or "http://HOST:PORT"; default
$IBISAGENT_TOOL), max_steps (20), max_pixels (512 * 512), max_episodes (4096).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import OrderedDict
from typing import Any

from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from ibisagent.env.protocol import parse_response
from ibisagent.integrations.verl import TOOL_NAME

SCHEMA = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Run the segmentation tool with the click in this turn's <action> block.",
        "parameters": {
            "type": "object",
            "properties": {"response": {"type": "string", "description": "the whole assistant turn"}},
            "required": ["response"],
        },
    },
}


@ToolParser.register("ibis")
class IbisActionParser(ToolParser):
    """Released-protocol turns -> at most one `ibis_click` call (clicks and discards only)."""

    async def extract_tool_calls(self, responses_ids: list[int], tools=None) -> tuple[str, list[FunctionCall]]:
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, lambda: self.tokenizer.decode(responses_ids, skip_special_tokens=True))
        return text, tool_calls_for(text)


def tool_calls_for(text: str) -> list[FunctionCall]:
    """The tool calls of one assistant turn: one for a click or a discard, none otherwise."""
    action = parse_response(text)
    if action.is_click or action.kind == "discard":
        return [FunctionCall(name=TOOL_NAME, arguments=json.dumps({"response": text}))]
    return []


class IbisClickTool(BaseTool):
    """One IbisEnv episode per trajectory; each call executes one action (see the module doc)."""

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None):
        super().__init__(config, tool_schema or OpenAIFunctionToolSchema.model_validate(SCHEMA))
        self.tool_spec = config.get("tool") or os.environ.get("IBISAGENT_TOOL", "litemedsam")
        self.max_steps = int(config.get("max_steps", 20))
        self.max_pixels = int(config.get("max_pixels", 512 * 512))
        self.max_episodes = int(config.get("max_episodes", 4096))
        self._tool = None
        self._episodes: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # the in-process tool and the LRU are not thread-safe

    def seg_tool(self):
        """The segmentation tool, built on first use (a model load or a server health check)."""
        if self._tool is None:
            from ibisagent.tools import make_tool

            self._tool = make_tool(self.tool_spec)
        return self._tool

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs) -> tuple[ToolResponse, float, dict]:
        agent_data = kwargs.get("agent_data")
        if agent_data is None:
            raise ValueError(f"{TOOL_NAME} needs the agent loop's agent_data (verl >= 0.9.1 ToolAgentLoop)")
        try:
            return await asyncio.to_thread(self._step, agent_data, str(parameters.get("response", "")))
        except Exception as exc:
            # verl turns a tool exception into a text reply; keep it so the reward raises, never scores 0
            agent_data.extra_fields["ibis_tool_error"] = f"{exc.__class__.__name__}: {exc}"
            raise

    def _env(self, agent_data):
        """This trajectory's environment, reset from its tools_kwargs on the first call."""
        key = agent_data.request_id
        env = self._episodes.get(key)
        if env is not None:
            self._episodes.move_to_end(key)
            return env
        from ibisagent.env.env import IbisEnv
        from ibisagent.io.images import load_image, load_mask
        from ibisagent.io.rle import rle_decode
        from ibisagent.rewards import make_env_reward

        args = (agent_data.tools_kwargs.get(TOOL_NAME) or {}).get("create_kwargs") or {}
        if not args.get("image_path"):
            raise ValueError(f"{TOOL_NAME}: tools_kwargs.{TOOL_NAME}.create_kwargs needs image_path (see data.py)")
        image = load_image(args["image_path"])
        gt = load_mask(args["gt_mask_path"], shape=image.shape[:2]) if args.get("gt_mask_path") else None
        init = rle_decode(json.loads(args["init_mask"])) if args.get("init_mask") else None
        reward = make_env_reward(args.get("answer"), bool(args.get("closed", False)))
        env = IbisEnv(self.seg_tool(), max_steps=self.max_steps, reward_fn=reward)
        env.reset(image, args.get("query") or "", gt_mask=gt, init_mask=init)
        self._episodes[key] = env
        while len(self._episodes) > self.max_episodes:
            self._episodes.popitem(last=False)
        return env

    def _step(self, agent_data, response: str) -> tuple[ToolResponse, float, dict]:
        from ibisagent.policies.vlm_chat import cap_image

        with self._lock:
            env = self._env(agent_data)
            if env.done:
                note = f"The episode is over ({env.episode.stop_reason}); answer with Terminate."
                return ToolResponse(text=note), 0.0, {"ibis_done": True}
            obs, reward, terminated, truncated, info = env.step(response)
        fields = agent_data.extra_fields
        fields.setdefault("ibis_step_rewards", []).append(float(reward))
        fields.setdefault("ibis_ious", []).append(info["iou"])
        fields["ibis_final_iou"] = info["iou"]
        fields["ibis_stop_reason"] = env.episode.stop_reason
        text = obs.text.removeprefix("<image>")
        metrics = {"iou": info["iou"], "step": info["step"], "done": bool(terminated or truncated)}
        return ToolResponse(image=[cap_image(obs.image, self.max_pixels)], text=text), float(reward), metrics

    async def release(self, instance_id: str, **kwargs) -> None:
        """verl releases after every call; the episode lives on until its trajectory's LRU slot goes."""

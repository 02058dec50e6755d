"""The rewards on the remote tool: the same scores as in process; a server that is down makes
the reward raise, never score 0."""

from __future__ import annotations

import pytest

from ibisagent.rewards import make_reward_funcs
from ibisagent.tools.remote import RemoteTool, ToolServerError
from tests.remote.conftest import serve


def _cols(rows):
    return {k: [r[k] for r in rows] for k in rows[0]}


def test_remote_rewards_equal_in_process_and_fail_loudly(tool, rl_rows):
    rows = [r for r in rl_rows if r["kind"] in ("segment", "self_correction", "vqa")][:12]
    completions = [[{"role": "assistant", "content": r["expert_response"]}] for r in rows]
    local = make_reward_funcs(tool)["s_total"](completions, **_cols(rows))
    with serve(tool) as url:
        remote_tool = RemoteTool(url=url, retries=0, timeout=600)
        remote = make_reward_funcs(remote_tool)
        assert remote["s_total"](completions, **_cols(rows)) == pytest.approx(local)
        assert remote_tool.stats["uploads"] == len({r["image_path"] for r in rows})
    # the server is gone: a new state needs the tool, and the reward raises
    fresh = make_reward_funcs(RemoteTool(url=url, retries=1, backoff=0.01, check=False))
    with pytest.raises(ToolServerError, match="tool server failed"):
        fresh["s_click"](completions[:1], **_cols(rows[:1]))

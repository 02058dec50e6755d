"""Scale-out RL with verl (>= 0.9.1) on a Ray cluster; see docs/verl.md.

- `reward`: `compute_score(data_source, solution_str, ground_truth, extra_info)`, verl's custom
  reward function, backed by `ibisagent.rewards` (no verl import);
- `data`: our synthesized RL rows (`synth.export.rl_rows`) -> verl's RL Parquet (no verl import);
- `tool`: `IbisClickTool`, our environment as a verl `BaseTool` for `ToolAgentLoop`, and the
  `ibis` tool parser that turns the released `<action>` protocol into tool calls (imports verl);
- `configs/`: the GRPO recipe (`ibis_grpo.yaml`) and the tool config (`ibis_tools.yaml`).
"""

CONFIG_DIR = __import__("pathlib").Path(__file__).parent / "configs"
TOOL_NAME = "ibis_click"

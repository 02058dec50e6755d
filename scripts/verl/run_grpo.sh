#!/usr/bin/env bash
# GRPO with verl (>= 0.9.1) on a Ray cluster: the reference recipe of
# ibisagent/integrations/verl/configs/ibis_grpo.yaml (G=4, lr 1e-6, no KL, clip 0.2, batch 256,
# 12 epochs, at most 20 actions, 32K context). See docs/verl.md.
#
#   MODEL=/ckpt/sft-merged TRAIN=data/verl/train.parquet VAL=data/verl/val.parquet \
#   TOOL=http://toolhost:8000 NNODES=2 GPUS=8 scripts/verl/run_grpo.sh [hydra overrides...]
#
# MODE=episode (default): whole episodes, ToolAgentLoop + IbisClickTool (rows from
#   `python -m ibisagent.integrations.verl.data ... --mode episode`);
# MODE=step: one action on expert-prefix states, the released recipe (rows from --mode step).
# DRY_RUN=1: print the arguments instead of starting; add `--cfg job` to have verl print the config.
# TOOL: the segmentation tool for the environment and the reward: litemedsam (in every worker)
#   or http://HOST:PORT of `ibisagent serve` (one shared tool server; a server that is down fails
#   the step instead of scoring 0).
set -euo pipefail
PY="${PYTHON:-python}"
: "${MODEL:?set MODEL to the SFT checkpoint (a merged Qwen2.5-VL / Qwen3-VL folder)}"
: "${TRAIN:?set TRAIN to verl RL Parquet rows (python -m ibisagent.integrations.verl.data)}"
MODE="${MODE:-episode}"
TOOL="${TOOL:-litemedsam}"
CFG_DIR="$("$PY" -c 'from ibisagent.integrations.verl import CONFIG_DIR; print(CONFIG_DIR)')"
REWARD="$("$PY" -c 'import ibisagent.integrations.verl.reward as r; print(r.__file__)')"
export IBISAGENT_TOOL="$TOOL" VERL_USE_EXTERNAL_MODULES=ibisagent.integrations.verl.tool

args=(
    --config-path="$CFG_DIR" --config-name=ibis_grpo
    data.train_files="$TRAIN" data.val_files="${VAL:-$TRAIN}"
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.rollout.multi_turn.tool_config_path="$CFG_DIR/ibis_tools.yaml"
    reward.custom_reward_function.path="$REWARD"
    trainer.nnodes="${NNODES:-1}" trainer.n_gpus_per_node="${GPUS:-8}"
    +ray_kwargs.ray_init.runtime_env.env_vars.IBISAGENT_TOOL="$TOOL"
    +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=ibisagent.integrations.verl.tool
)
case "$MODE" in
    episode) ;;
    step)
        args+=(
            actor_rollout_ref.rollout.multi_turn.enable=false
            actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent
            data.max_prompt_length=4096 data.max_response_length=512
        )
        ;;
    *) echo "MODE must be episode or step, not $MODE" >&2; exit 2 ;;
esac
if [ "${DRY_RUN:-0}" = 1 ]; then  # print the arguments, one a line, and stop (tests compose them)
    printf '%s\n' "${args[@]}" "$@"
    exit 0
fi
exec "$PY" -m verl.trainer.main_ppo "${args[@]}" "$@"

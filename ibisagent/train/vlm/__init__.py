"""The VLM's training: SFT with TRL (sft, sft_data) and agentic GRPO through the environment
(grpo, rollout, rl_batch, rl_config, rl_state)."""

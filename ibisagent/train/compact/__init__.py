"""The compact policy's training: SFT of the belief net (sft), GRPO on its head (grpo),
`ibisagent train compact` (pipeline) and `ibisagent teach` (teach)."""

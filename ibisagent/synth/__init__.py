"""Cold-start data (spec section 4): trajectories from the click simulator over the real
environment, grounded reasoning per step, self-reflection, negatives and VQA, and exports for
SFT (chat rows, ShareGPT) and RL (step-level Parquet rows). `ibisagent synth` runs it."""

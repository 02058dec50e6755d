"""GRPO for the IBISAgent policy: a compact loop on transformers + peft + accelerate.

Why not TRL's GRPOTrainer: its multi-turn hooks (`environment_factory=`, `rollout_func=`,
`tools=`) pass tool results through the chat template's tool role, which Qwen2.5-VL's template
does not have, and results longer than `max_completion_length` are silently dropped; our
environment returns a new IMAGE (the mask overlay) after every click. So the rollouts are ours
(`train.vlm.rollout`, through `IbisEnv` with one shared tool), and so is this loop; the rewards are
the TRL-style functions of `ibisagent.rewards` (`(completions, **kwargs) -> list[float]`), the
loss rows are the sampled token ids after their prompt (`train.vlm.rl_batch`; the SFT collator's
label masking for whole-episode chats).

Per optimiser step: `batch_size` queries x G rollouts; reward r_i; advantage
A_i = (r_i - mean_group) / (std_group + 1e-4) (population std; `scale_rewards: false` keeps
only the centring); every agent token t of rollout i gets A_i; observation and prompt tokens
carry no loss. Token-level clipped objective (normalised by the number of agent tokens in the
batch, as DAPO / TRL's "token" loss):
    L = -sum_t min(rho_t A, clip(rho_t, 1 - eps, 1 + eps_high) A) / N_tokens + beta * KL_k3
with rho_t = exp(logp_t - logp_old_t). With `num_iterations` = 1 (the default) logp_old is the
detached current log-prob (rho = 1, the clip is inert, the gradient is GRPO's); more
iterations reuse the rollouts with the clip active. beta = 0 by default (no reference model);
beta > 0 uses the base model (LoRA adapters disabled) or a frozen copy (full fine-tune).
Logits are divided by the sampling temperature, as in the sampler.

    ibisagent train rl --config ibisagent/train/configs/rl_reference.yaml
    accelerate launch -m ibisagent.train.vlm.grpo --config FILE      (several GPUs: data parallel)
"""

from __future__ import annotations

import argparse
import importlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.train.vlm.rl_config import BUILTIN_REWARDS, RLRun
from ibisagent.train.vlm.rollout import Rollout

ADV_EPS = 1e-4


# -- the objective ------------------------------------------------------------------------------
def group_advantages(rewards: np.ndarray, groups: np.ndarray, scale: bool = True) -> np.ndarray:
    """A_i = (r_i - mean of i's group) / (std of i's group + 1e-4); rewards, groups: (N,)."""
    adv = np.zeros(len(rewards))
    for g in np.unique(groups):
        sel = groups == g
        r = rewards[sel]
        adv[sel] = (r - r.mean()) / ((r.std() + ADV_EPS) if scale else 1.0)
    return adv


def token_logps(model, batch: dict, temperature: float = 1.0):
    """(logp, mask), both B x (T-1): log-prob of each next token and 1 where it is an agent token
    (labels != -100 in the SFT collator's batch)."""
    import torch

    from ibisagent.train.vlm.sft_data import IGNORE

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float() / temperature
    tgt = batch["input_ids"][:, 1:]
    logp = torch.gather(logits, -1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    return logp, (batch["labels"][:, 1:] != IGNORE).float()


def clipped_loss(logp, old, adv, mask, n_tokens: float, eps: float, eps_high: float, beta: float = 0.0, ref=None):
    """Token-level clipped surrogate (B x T tensors; adv B) summed / n_tokens; returns (loss, stats)."""
    import torch

    ratio = torch.exp(logp - old)
    a = adv.unsqueeze(1)
    obj = torch.minimum(ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps_high) * a)
    per_tok = -obj
    kl = None
    if beta > 0 and ref is not None:
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_tok = per_tok + beta * kl
    loss = (per_tok * mask).sum() / n_tokens
    clipped = ((ratio < 1 - eps) | (ratio > 1 + eps_high)).float()
    stats = {"clip_ratio": float((clipped * mask).sum()) / n_tokens}
    if kl is not None:
        stats["kl"] = float((kl.detach() * mask).sum()) / n_tokens
    return loss, stats


# -- rewards and data ---------------------------------------------------------------------------
def resolve_rewards(spec: dict[str, float], mode: str, tool) -> dict[str, tuple[Callable | None, float]]:
    """{name: (fn, weight)}: built-in names map to `rewards.make_reward_funcs(tool)` in the step
    mode and to the environment's recorded terms (fn None) in the episode mode; "mod:fn" imports."""
    from ibisagent.rewards import make_reward_funcs

    builtin = make_reward_funcs(tool) if mode == "step" else {}
    out = {}
    for name, w in spec.items():
        if name in BUILTIN_REWARDS:
            out[name] = (builtin.get(name), float(w))
            continue
        mod, _, attr = str(name).partition(":")
        try:
            out[name] = (getattr(importlib.import_module(mod), attr), float(w))
        except (ImportError, AttributeError) as exc:
            raise IbisInputError(f"rewards: {name}", f"cannot import ({exc})") from None
    return out


def load_data(run: RLRun) -> list:
    """Step mode: synth RL rows; episode mode: `rollout.Task`s."""
    from ibisagent.train.vlm.rollout import load_parquet_rows, tasks_from_pairs, tasks_from_rows

    items = []
    for src in run.data:
        if "parquet" in src:
            rows = load_parquet_rows(src["parquet"], src.get("max_rows"))
            items += rows if run.mode == "step" else tasks_from_rows(rows)
        else:
            items += tasks_from_pairs(src["pairs"], src.get("max_samples"), src.get("max_side"), run.seed)
    if not items:
        raise IbisInputError("data", f"no usable items for the {run.mode} mode")
    return items


def batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Indices of step `step`'s queries: epoch-wise permutations seeded by (seed, epoch), so the
    data order depends on the step alone (an exact resume needs no data cursor)."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[pos]))
    return out


def total_steps(run: RLRun, n: int) -> int:
    return run.max_steps if run.max_steps > 0 else max(1, math.ceil(run.num_train_epochs * n / run.batch_size))


# -- the loop -----------------------------------------------------------------------------------
class GRPO:
    """Model, optimiser, tool and data of one run; `train()` runs it (resuming when asked)."""

    def __init__(self, run: RLRun, reward_funcs: dict | None = None, tool=None, config=None):
        """`config`: the YAML file `run` was read from (named in the model card)."""
        import random

        import torch
        from accelerate import Accelerator
        from transformers import get_scheduler

        from ibisagent.hardware import training_bf16
        from ibisagent.policies.vlm_hf import checkpoint_family, families, load_processor
        from ibisagent.train.vlm.sft import prepare_model

        run.check()
        self.run, self.config = run, config
        random.seed(run.seed)
        np.random.seed(run.seed)
        bf16 = training_bf16(run.bf16)
        self.acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if bf16 else "no")
        torch.manual_seed(run.seed)
        family = checkpoint_family(Path(run.model))
        model = families()[family][1].from_pretrained(run.model, dtype=torch.float32)
        self.processor = load_processor(run.model, family)
        model = prepare_model(model, run)
        self.peft = hasattr(model, "peft_config")
        if run.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if self.peft:
                model.enable_input_require_grads()
        self.ref = None
        if run.beta > 0 and not self.peft:
            import copy

            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=run.learning_rate, weight_decay=run.weight_decay)
        self.items = load_data(run)
        self.total = total_steps(run, len(self.items))
        self.sched = get_scheduler(run.lr_scheduler_type, opt, run.warmup_steps, self.total)
        self.model, self.opt = self.acc.prepare(model.train(), opt)
        if tool is None:
            from ibisagent.tools import make_tool

            tool = make_tool(run.tool)
        self.tool = tool
        self.rewards = reward_funcs or resolve_rewards(run.rewards, run.mode, tool)
        from ibisagent.train.vlm.rollout import make_generator

        self.generate = make_generator(
            run.generation,
            self.acc.unwrap_model(self.model),
            self.processor,
            max_new_tokens=run.max_new_tokens,
            temperature=run.temperature,
            top_p=run.top_p,
        )
        self.step = 0

    # -- rollouts -------------------------------------------------------------------------
    def rollouts(self, idx: list[int]) -> list[Rollout]:
        from ibisagent.train.vlm.rollout import rollout_episodes, rollout_steps

        run, items = self.run, [self.items[i] for i in idx]
        if run.mode == "episode":
            return rollout_episodes(
                items,
                run.num_generations,
                self.generate,
                self.tool,
                self.rewards,
                run.max_actions,
                run.history,
                run.max_pixels,
            )
        from ibisagent.rewards import StepScorer, make_reward_funcs

        if not hasattr(self, "_spec"):
            self._spec, self._scorer = make_reward_funcs(self.tool), StepScorer(self.tool)
        return rollout_steps(
            items, run.num_generations, self.generate, self.rewards, self._spec, self._scorer, run.max_pixels
        )

    # -- one optimiser step ---------------------------------------------------------------
    def optimise(self, rollouts: list[Rollout], adv: np.ndarray) -> dict:
        """Clipped objective over all agent tokens of the rollouts; returns loss statistics."""
        import torch

        from ibisagent.train.vlm.rl_batch import collate_rollout_rows

        run = self.run
        items = [(row, a) for r, a in zip(rollouts, adv) for row in r.rows]
        mbs = []
        for k in range(0, len(items), run.micro_batch_size):
            chunk = items[k : k + run.micro_batch_size]
            rows = [row for row, _ in chunk]
            batch = {
                key: v.to(self.acc.device)
                for key, v in collate_rollout_rows(self.processor, rows, run.max_pixels).items()
            }
            mbs.append({"batch": batch, "adv": torch.tensor([a for _, a in chunk], dtype=torch.float32)})
        n_tokens = max(1.0, float(sum((mb["batch"]["labels"][:, 1:] != -100).sum() for mb in mbs)))
        if run.num_iterations > 1 or run.beta > 0:
            with torch.no_grad():
                for mb in mbs:
                    if run.num_iterations > 1:
                        mb["old"] = token_logps(self.model, mb["batch"], run.temperature)[0]
                    if run.beta > 0:
                        mb["ref"] = self._ref_logps(mb["batch"])
        eps_high = run.epsilon if run.epsilon_high is None else run.epsilon_high
        stats = {"loss": 0.0, "clip_ratio": 0.0, "kl": 0.0}
        for _ in range(run.num_iterations):
            self.opt.zero_grad(set_to_none=True)
            for mb in mbs:
                with self.acc.autocast():
                    logp, mask = token_logps(self.model, mb["batch"], run.temperature)
                    old = mb.get("old", logp.detach())
                    loss, st = clipped_loss(
                        logp,
                        old,
                        mb["adv"].to(logp.device),
                        mask,
                        n_tokens,
                        run.epsilon,
                        eps_high,
                        run.beta,
                        mb.get("ref"),
                    )
                self.acc.backward(loss)
                stats["loss"] += float(loss.detach()) / run.num_iterations
                for k, v in st.items():
                    stats[k] += v / run.num_iterations
            params = [p for p in self.model.parameters() if p.requires_grad]
            stats["grad_norm"] = float(self.acc.clip_grad_norm_(params, run.max_grad_norm))
            self.opt.step()
        self.sched.step()
        stats["agent_tokens"] = n_tokens
        return stats

    def _ref_logps(self, batch: dict):
        if self.ref is not None:
            return token_logps(self.ref, batch, self.run.temperature)[0]
        with self.acc.unwrap_model(self.model).disable_adapter():
            return token_logps(self.model, batch, self.run.temperature)[0]

    # -- the run --------------------------------------------------------------------------
    def resume(self) -> None:
        from ibisagent.train.vlm.rl_state import checkpoints, load_checkpoint

        found = checkpoints(self.run.output_dir)
        if self.run.resume and found:
            state = load_checkpoint(found[-1], self.acc.unwrap_model(self.model), self.opt, self.sched)
            self.step = int(state["step"])

    def train(self, on_step: Callable[[dict], None] | None = None) -> dict:
        """Run until `total` steps; `on_step(metrics)` after each. Returns the final metrics."""
        from ibisagent.train.vlm.rl_state import MetricLog, export_model, save_checkpoint

        run = self.run
        self.resume()
        log = MetricLog(run.output_dir, self.step, run.tensorboard)
        metrics: dict = {}
        try:
            while self.step < self.total:
                idx = batch_indices(self.step, run.batch_size, len(self.items), run.seed)
                idx = idx[self.acc.process_index :: self.acc.num_processes]
                enc0, t0 = self.tool.timings.encoder_calls, time.perf_counter()
                rollouts = self.rollouts(idx)
                t1 = time.perf_counter()
                rewards = np.array([r.reward for r in rollouts])
                groups = np.array([r.group for r in rollouts])
                adv = group_advantages(rewards, groups, run.scale_rewards)
                stats = self.optimise(rollouts, adv)
                self.step += 1
                metrics = step_metrics(self.step, rollouts, rewards, groups, stats)
                metrics.update(
                    lr=self.sched.get_last_lr()[0],
                    rollout_s=t1 - t0,
                    train_s=time.perf_counter() - t1,
                    encoder_calls=self.tool.timings.encoder_calls - enc0,
                )
                if self.acc.is_main_process:
                    if self.step % run.logging_steps == 0 or self.step == self.total:
                        log.log(metrics)
                    if self.step % run.save_steps == 0 or self.step == self.total:
                        save_checkpoint(
                            run.output_dir,
                            self.step,
                            self.acc.unwrap_model(self.model),
                            self.opt,
                            self.sched,
                            self.processor,
                            run.save_total_limit,
                            {"total": self.total, "mode": run.mode},
                        )
                if on_step is not None:
                    on_step(metrics)
        finally:
            log.close()
        if self.acc.is_main_process:
            from ibisagent.io.jsonl import read_jsonl
            from ibisagent.train.vlm.card import write_vlm_card

            name = "adapter" if self.peft else "model"
            model = self.acc.unwrap_model(self.model)
            export_model(model, self.processor, Path(run.output_dir) / name)
            log = read_jsonl(Path(run.output_dir) / "metrics.jsonl")
            write_vlm_card("rl", run, run.output_dir, log, self.step, len(self.items), model, self.config)
        return metrics


def step_metrics(step: int, rollouts: list[Rollout], rewards: np.ndarray, groups: np.ndarray, stats: dict) -> dict:
    """What one step logs: reward mean/std, each spec term, IoU, actions, format errors, ..."""
    from ibisagent.rewards import TERMS

    ious = [r.iou for r in rollouts if r.iou is not None]
    actions = sum(r.actions for r in rollouts)
    spread = [rewards[groups == g].std() for g in np.unique(groups)]
    m = {
        "step": step,
        "reward": float(rewards.mean()),
        "reward_std": float(rewards.std()),
        "frac_groups_no_signal": float(np.mean([s < 1e-8 for s in spread])),
        **{f"s_{k}": float(np.mean([r.terms[k] for r in rollouts])) for k in (*TERMS, "total")},
        "iou": float(np.mean(ious)) if ious else float("nan"),
        "actions": actions / len(rollouts),
        "format_errors": sum(r.format_errors for r in rollouts),
        "format_error_rate": sum(r.format_errors for r in rollouts) / max(1, actions),
        "truncated": sum(r.truncated for r in rollouts),
        "completion_tokens": float(np.mean([r.tokens for r in rollouts])),
        "rollouts": len(rollouts),
    }
    m.update(stats)
    return m


def train_rl(run: RLRun, reward_funcs: dict | None = None, tool=None, on_step=None, config=None) -> dict:
    """Build and run a GRPO run; returns the last step's metrics."""
    return GRPO(run, reward_funcs, tool, config).train(on_step)


def main(argv: list[str] | None = None) -> None:
    """Entry point for `accelerate launch -m ibisagent.train.vlm.grpo --config FILE`."""
    import json

    ap = argparse.ArgumentParser(description="GRPO of a Qwen-VL agent (see module docstring)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--output-dir")
    ap.add_argument("--max-steps", type=int)
    a = ap.parse_args(argv)
    run = RLRun.from_yaml(a.config, output_dir=a.output_dir, max_steps=a.max_steps)
    print(json.dumps(train_rl(run, config=a.config)))


if __name__ == "__main__":
    main()

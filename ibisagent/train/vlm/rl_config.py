"""The configuration of one GRPO run (`ibisagent train rl --config FILE`), read from YAML.

Defaults are the reference recipe (spec section 5): G = 4 rollouts per query, no KL term
(beta 0), clip 0.2, learning rate 1e-6, at most 20 actions per episode, group-normalised
advantages, images at most 512 x 512 pixels, LoRA rank 8 on the language linears with the vision
tower frozen (as the SFT stage; `lora: null` trains the language model fully).

mode "step": one action per sample from an expert-prefix state (rows of `ibisagent synth`'s
RL Parquet), as the reference release trains. mode "episode": whole episodes from the first
state (the paper's objective): one advantage per episode, loss over all its agent tokens.

data: a list of sources, each {"parquet": PATH, "max_rows": N} (synth RL rows) or, for the
episode mode, {"pairs": PAIRS_CSV, "max_samples": N, "max_side": PX} (image/mask pairs with
referring queries).

rewards: {name: weight}; names are the spec's terms `s_format`, `s_ans`, `s_click`, `s_pseg`,
`s_len` and their mean `s_total` (`ibisagent.rewards`), or "package.module:function" for any
TRL-style `(completions, **kwargs) -> list[float]` function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ibisagent.errors import IbisInputError
from ibisagent.policies.vlm_chat import MAX_PIXELS
from ibisagent.train.run_yaml import read_run_yaml

MODES = ("step", "episode")
BUILTIN_REWARDS = ("s_format", "s_ans", "s_click", "s_pseg", "s_len", "s_total")


@dataclass
class RLRun:
    """One GRPO run; see the module docstring for `mode`, `data` and `rewards`."""

    model: str
    output_dir: str = "runs/rl"
    mode: str = "step"
    data: list[dict] = field(default_factory=list)
    rewards: dict[str, float] = field(default_factory=lambda: {"s_total": 1.0})
    num_generations: int = 4  # G
    batch_size: int = 64  # queries per optimiser step (x G rollouts)
    micro_batch_size: int = 4  # chat rows per forward/backward pass
    num_iterations: int = 1  # optimiser passes over each batch of rollouts (PPO's epochs)
    max_actions: int = 20
    history: bool = False  # episode mode: the whole chat per step (True) or [system, user] (as released)
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    max_pixels: int = MAX_PIXELS
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epsilon: float = 0.2  # clip range: ratio in [1 - eps, 1 + eps]
    epsilon_high: float | None = None  # DAPO's asymmetric upper clip (None = epsilon)
    beta: float = 0.0  # KL coefficient against the reference model (0 = none, as the reference)
    scale_rewards: bool = True  # divide by the group's std (GRPO); False = mean-centring only (Dr. GRPO)
    num_train_epochs: float = 12.0
    max_steps: int = -1
    lora: dict | None = field(default_factory=lambda: {"r": 8, "alpha": 16, "dropout": 0.0})
    freeze_vision: bool = True
    gradient_checkpointing: bool = False
    bf16: str | bool = "auto"
    generation: str = "transformers"  # or "vllm" (GPU; see rollout.make_generator)
    tool: str = "litemedsam"
    save_steps: int = 50
    save_total_limit: int = 3
    logging_steps: int = 1
    tensorboard: str | bool = "auto"  # "auto": when the tensorboard package is installed
    resume: bool = True
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> RLRun:
        raw = read_run_yaml(cls, path, overrides)
        try:
            run = cls(**raw)
        except TypeError as exc:
            raise IbisInputError(path, str(exc)) from None
        run.check(path)
        return run

    def check(self, where: object = "config") -> None:
        """One-line IbisInputError for values that cannot work (before any model is loaded)."""

        def bad(key: str, problem: str) -> None:
            raise IbisInputError(where, f"{key}: {problem}")

        if self.mode not in MODES:
            bad("mode", f"{self.mode!r} is not one of {', '.join(MODES)}")
        if not Path(self.model).is_dir():
            bad("model", f"{self.model} is not a local model folder")
        if int(self.num_generations) < 2:
            bad("num_generations", "GRPO needs at least 2 rollouts per query (group-normalised advantages)")
        for key in ("batch_size", "micro_batch_size", "num_iterations", "max_actions", "max_new_tokens"):
            if int(getattr(self, key)) < 1:
                bad(key, "must be at least 1")
        if not (0 < float(self.epsilon) < 1):
            bad("epsilon", "the clip range must be in (0, 1)")
        if float(self.learning_rate) <= 0 or float(self.beta) < 0 or float(self.temperature) <= 0:
            bad("learning_rate/beta/temperature", "learning_rate and temperature must be > 0, beta >= 0")
        if self.generation not in ("transformers", "vllm"):
            bad("generation", f"{self.generation!r} is not transformers or vllm")
        if not isinstance(self.rewards, dict) or not self.rewards:
            bad("rewards", "a mapping {name: weight} with at least one reward")
        for name in self.rewards:
            if name not in BUILTIN_REWARDS and ":" not in str(name):
                bad("rewards", f"unknown reward {name!r}; use {', '.join(BUILTIN_REWARDS)} or module:function")
        if not self.data:
            bad("data", "the config lists no data sources")
        for src in self.data:
            if not isinstance(src, dict) or not ({"parquet", "pairs"} & set(src)):
                bad("data", "each source is {parquet: PATH} or {pairs: PAIRS_CSV}")
            if "pairs" in src and self.mode == "step":
                bad("data", "the step mode needs expert-prefix states: {parquet: RL_PARQUET} from `ibisagent synth`")
            path = Path(src.get("parquet") or src.get("pairs"))
            if not path.exists():
                bad("data", f"{path} not found")

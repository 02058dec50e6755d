"""GRPO rollouts: G samples per query through the real environment, sampled from the policy.

All rollouts share ONE tool instance, so an image is encoded once per group (the tool's
content-keyed embedding cache answers the other G - 1 resets; `tool.timings.encoder_calls`
counts the passes), and each decision step of all live rollouts is ONE batched generate() call.

- `rollout_steps` (step-level, as the reference release trains): one action per sample from an
  expert-prefix state (a row of the synth RL Parquet: the observation image and text, the clicks
  in force, previous IoU and step); rewards are TRL-style functions `(completions, **kwargs)`
  called with the rows' columns (`ibisagent.rewards.make_reward_funcs`).
- `rollout_episodes` (the paper's objective): whole episodes from the first state, at most
  `max_actions` actions; the reward of an episode is the mean of its per-action rewards and the
  loss rows hold every agent turn: one row per turn with its sampled token ids (history off, as
  released), or one chat of the whole episode (history on; observations masked by the labels).
Malformed text is an action like any other: the parser marks it invalid, the environment ends
the episode (the released rule) and S_format scores 0. Nothing in the batch raises on it.

Generation goes through a `Generator`: any callable `(prompts) -> list[GenOut]` where a prompt is
(messages, PIL images) in the Hugging Face chat layout (`policies.vlm_chat`). `HFGenerator` uses
transformers; `make_generator` is the seam for vLLM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ibisagent.errors import IbisInputError
from ibisagent.policies.vlm_chat import MAX_PIXELS, assistant_turn, cap_image, system_turn, user_turn
from ibisagent.rewards import TERMS, score_terms

Prompt = tuple[list[dict], list]  # (messages, PIL images)
RewardFn = Callable[..., list[float]]  # TRL-style: (completions, **kwargs) -> one float per completion


@dataclass
class GenOut:
    text: str  # the decoded assistant turn (special tokens removed)
    tokens: int  # generated tokens (eos included)
    truncated: bool  # hit max_new_tokens before the end of turn
    ids: list[int] | None = None  # the sampled token ids (eos included), trained on exactly


_SPECIAL = re.compile(r"<\|[a-z_]+\|>")


def clean_text(text: str) -> str:
    """Assistant text safe to put back into a chat: no special-token strings (a literal
    `<|im_start|>` or `<|image_pad|>` would split the turn or add an image slot)."""
    return _SPECIAL.sub("", text)


class HFGenerator:
    """Batched sampling with transformers (left padding; the global torch RNG, so a restored
    RNG state reproduces the samples). The model is put in eval mode for generation only."""

    def __init__(self, model, processor, max_new_tokens: int = 512, temperature: float = 1.0, top_p: float = 1.0):
        self.model, self.processor = model, processor
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p

    def __call__(self, prompts: list[Prompt]) -> list[GenOut]:
        import torch

        proc, tok = self.processor, self.processor.tokenizer
        texts = [proc.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m, _ in prompts]
        images = [img for _, imgs in prompts for img in imgs]
        tok.padding_side = "left"
        inputs = proc(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.model.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.generate(
                    **inputs,
                    do_sample=True,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=tok.pad_token_id,
                )
        finally:
            self.model.train(was_training)
        new = out[:, inputs["input_ids"].shape[1] :].tolist()
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        res = []
        for ids in new:
            end = next((i + 1 for i, t in enumerate(ids) if t in eos), None)
            kept = ids if end is None else ids[:end]
            text = tok.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            res.append(GenOut(clean_text(text), len(kept), end is None, kept))
        return res


def make_generator(backend: str, model, processor, **kwargs) -> Callable[[list[Prompt]], list[GenOut]]:
    """The rollout generator. "transformers": `HFGenerator`. "vllm" is the seam for a vLLM
    engine (GPU): it needs the engine and the weight sync from the trained model to it, which
    this build does not include; it fails loudly rather than falling back."""
    if backend == "transformers":
        return HFGenerator(model, processor, **kwargs)
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise IbisInputError(
            "generation: vllm", "vllm is not installed (GPU only); use generation: transformers"
        ) from None
    raise IbisInputError("generation: vllm", "the vLLM rollout engine is not part of this build yet; use transformers")


@dataclass
class Task:
    """One query of the episode mode: H x W x 3 uint8 image, H x W bool masks."""

    image: np.ndarray
    query: str
    gt: np.ndarray | None
    init_mask: np.ndarray | None = None
    answer: str | None = None
    closed: bool = False
    name: str | None = None


@dataclass
class Rollout:
    """One sample of a group: its loss rows (`sft_data` layout: messages, images, train flags),
    its scalar reward, the spec's terms (mean per action), final IoU, actions, format errors."""

    group: int
    rows: list[dict]
    reward: float
    terms: dict[str, float]
    iou: float | None
    actions: int
    format_errors: int
    tokens: int
    truncated: int = 0
    texts: list[str] = field(default_factory=list)


# -- data ---------------------------------------------------------------------------------------
def load_parquet_rows(path: str | Path, max_rows: int | None = None) -> list[dict]:
    """Rows of a synth RL Parquet (`synth.export.write_rl_parquet`)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()[:max_rows]
    need = {"image_path", "gt_mask_path", "obs_path", "user_text", "step", "prev_iou", "prev_clicks"}
    if rows and need - set(rows[0]):
        raise IbisInputError(path, f"not synth RL rows: missing column(s) {', '.join(sorted(need - set(rows[0])))}")
    if not rows:
        raise IbisInputError(path, "no rows")
    return rows


def tasks_from_rows(rows: list[dict]) -> list[Task]:
    """Episode-mode tasks from the first state (step 1) of each synth trajectory."""
    from ibisagent.io.images import load_image, load_mask
    from ibisagent.io.rle import rle_decode

    tasks = []
    for r in rows:
        if int(r["step"]) != 1:
            continue
        image = load_image(r["image_path"])
        gt = load_mask(r["gt_mask_path"], shape=image.shape[:2])
        init = rle_decode(json.loads(r["init_mask"])) if r.get("init_mask") else None
        tasks.append(Task(image, r["query"], gt, init, r.get("answer"), bool(r.get("closed")), r["image_path"]))
    return tasks


def tasks_from_pairs(pairs: str | Path, max_samples: int | None = None, max_side: int | None = None, seed: int = 0):
    """Episode-mode tasks from a pairs.csv: referring queries (`data.queries`), images shrunk
    so the longer side is at most `max_side` pixels."""
    from ibisagent.data.pairs import read_pairs_csv
    from ibisagent.data.queries import make_query
    from ibisagent.train.vlm.sft_data import shrink

    tasks = []
    for s in [s for s in read_pairs_csv(pairs) if not s.negative and s.mask is not None][:max_samples]:
        image, gt = shrink(*s.load(), max_side)
        tasks.append(Task(image, make_query(s, "referring", seed).text, gt, name=s.id))
    return tasks


# -- rewards ------------------------------------------------------------------------------------
class TermRecorder:
    """An `IbisEnv` reward_fn that keeps the spec's five terms (and `total`) of every action."""

    def __init__(self, expected: str | None = None, closed: bool = False):
        self.expected, self.closed, self.steps = expected, closed, []

    def __call__(self, ctx: dict) -> float:
        t = score_terms(
            ctx.get("response") or "",
            ctx["prev_mask"],
            ctx["mask"],
            ctx.get("gt"),
            ctx.get("prev_iou"),
            int(ctx["step"]),
            self.expected,
            self.closed,
        )
        self.steps.append({**t, "iou": ctx.get("iou"), "prev_iou": ctx.get("prev_iou"), "step": int(ctx["step"])})
        return t["total"]


def mean_terms(steps: list[dict]) -> dict[str, float]:
    keys = (*TERMS, "total")
    return {k: float(np.mean([s[k] for s in steps])) if steps else 0.0 for k in keys}


def format_errors(texts: list[str]) -> int:
    from ibisagent.env.protocol import format_check

    return sum(format_check(t) is not None for t in texts)


# -- the two modes ------------------------------------------------------------------------------
def rollout_episodes(
    tasks: list[Task],
    num_generations: int,
    generate: Callable[[list[Prompt]], list[GenOut]],
    tool,
    reward_funcs: dict[str, tuple[RewardFn | None, float]],
    max_actions: int = 20,
    history: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> list[Rollout]:
    """G whole episodes per task. `reward_funcs`: {name: (fn, weight)}; fn None = a built-in
    term (`s_total`, `s_format`, ...) read from the environment's recorder; a custom fn is called
    with the episode's turns as completions and columns step, prev_iou, iou, query, answer."""
    from ibisagent.env.env import IbisEnv
    from ibisagent.policies.vlm_chat import episode_chat, training_chats

    slots = []
    for g, task in enumerate(tasks):
        for _ in range(num_generations):
            rec = TermRecorder(task.answer, task.closed)
            env = IbisEnv(tool, max_steps=max_actions, reward_fn=rec)
            obs, _ = env.reset(task.image, task.query, gt_mask=task.gt, init_mask=task.init_mask, image_name=task.name)
            slots.append(
                {"env": env, "obs": obs, "rec": rec, "group": g, "task": task, "tokens": 0, "trunc": 0, "ids": []}
            )
    live = list(slots)
    while live:
        prompts = [
            episode_chat(
                s["obs"].original, s["env"].episode, history=history, max_pixels=max_pixels, current=_view(s["obs"])
            )
            for s in live
        ]
        outs = generate(prompts)
        for s, out in zip(live, outs):
            s["obs"], _, term, trunc, _ = s["env"].step(out.text)
            s["ids"].append(out.ids)
            s["tokens"] += out.tokens
            s["trunc"] += int(out.truncated)
            s["done"] = term or trunc
        live = [s for s in live if not s["done"]]
    res = []
    for s in slots:
        env, steps, task = s["env"], s["rec"].steps, s["task"]
        texts = [st.response for st in env.episode.steps]
        reward = float(np.mean(_step_rewards(texts, steps, task, reward_funcs)))
        rows = training_chats(task.image, env.episode, history=history, max_pixels=max_pixels)
        if not history:  # one row per sampled turn: train on the sampled ids (`train.vlm.rl_batch`)
            for row, ids in zip(rows, s["ids"]):
                row["completion_ids"] = ids
        res.append(
            Rollout(
                s["group"],
                rows,
                reward,
                mean_terms(steps),
                env.current_iou(),
                len(texts),
                format_errors(texts),
                s["tokens"],
                s["trunc"],
                texts,
            )
        )
    return res


def _view(obs) -> tuple[np.ndarray, str]:
    return obs.image, obs.text


def _step_rewards(texts: list[str], steps: list[dict], task: Task, funcs) -> np.ndarray:
    """Weighted sum of the reward functions for each action of one episode."""
    total = np.zeros(len(texts))
    cols = {
        "step": [s["step"] for s in steps],
        "prev_iou": [s["prev_iou"] for s in steps],
        "iou": [s["iou"] for s in steps],
        "query": [task.query] * len(texts),
        "answer": [task.answer] * len(texts),
        "closed": [task.closed] * len(texts),
    }
    for name, (fn, w) in funcs.items():
        vals = [s[name[2:]] for s in steps] if fn is None else fn(texts, **cols)
        total += w * np.asarray(vals, float)
    return total


def rollout_steps(
    rows: list[dict],
    num_generations: int,
    generate: Callable[[list[Prompt]], list[GenOut]],
    reward_funcs: dict[str, tuple[RewardFn, float]],
    spec_funcs: dict[str, RewardFn],
    iou_scorer=None,
    max_pixels: int = MAX_PIXELS,
) -> list[Rollout]:
    """G single actions per expert-prefix row. `reward_funcs`: {name: (fn, weight)} of
    TRL-style functions (called with the rows' columns); `spec_funcs`: `rewards.make_reward_funcs`
    (the terms logged); `iou_scorer`: a `rewards.StepScorer` for the IoU after the action."""
    from ibisagent.env.protocol import SYSTEM_PROMPT
    from ibisagent.io.images import load_image

    G = num_generations
    prompts = []
    for r in rows:
        msgs = [system_turn(r.get("system") or SYSTEM_PROMPT), user_turn(r["user_text"])]
        img = cap_image(load_image(r["obs_path"]), max_pixels)
        prompts += [(msgs, [img])] * G
    outs = generate(prompts)
    texts = [o.text for o in outs]
    cols = {k: [r.get(k) for r in rows for _ in range(G)] for k in rows[0]}
    reward = np.zeros(len(texts))
    for fn, w in reward_funcs.values():
        reward += w * np.asarray(fn(texts, **cols), float)
    terms = {name[2:]: spec_funcs[name](texts, **cols) for name in spec_funcs}
    res = []
    for i, (text, out) in enumerate(zip(texts, outs)):
        r = rows[i // G]
        row = {"messages": [*prompts[i][0], assistant_turn(text)], "images": prompts[i][1], "train": [True]}
        row["completion_ids"] = out.ids
        iou = _iou_after(iou_scorer, text, r) if iou_scorer is not None else None
        t = {k: float(v[i]) for k, v in terms.items()}
        res.append(
            Rollout(i // G, [row], float(reward[i]), t, iou, 1, format_errors([text]), out.tokens, int(out.truncated))
        )
        res[-1].texts = [text]
    return res


def _iou_after(scorer, text: str, row: dict) -> float | None:
    """IoU of the mask after `text`'s action on the row's state (the mask before it for a stop
    or an invalid turn), with the scorer's cached prefix states."""
    from ibisagent.env.protocol import parse_response

    clicks = tuple(tuple(int(v) for v in c) for c in row.get("prev_clicks") or [])
    env = scorer._env(row, clicks)
    action = parse_response(text)
    if action.is_click or action.kind == "discard":
        env.step(action)
    return env.current_iou()

"""One sample, several policies: the episodes of the evaluation harness and their JSONL rows.

A result row holds only what is reproducible from the seed (no wall-clock times), so identical
seeds give byte-identical results files; timings go to a separate latency row. A sample that
fails gives a row with `error` set for every policy instead of raising.
"""

from __future__ import annotations

import hashlib
import time
import traceback

import numpy as np

from ibisagent.data.pairs import Sample
from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import format_check, parse_response
from ibisagent.errors import IbisInputError
from ibisagent.io.rle import rle_encode
from ibisagent.metrics import iou, mask_scores
from ibisagent.policies.base import Policy
from ibisagent.policies.runner import run_episode
from ibisagent.rewards import make_env_reward

REASONING_CHARS = 400  # per step, in the row (the gallery shows it)


def episode_seed(run_seed: int, key: str, policy: str) -> int:
    """A stable 63-bit seed for one (sample, policy) episode, independent of order and worker."""
    digest = hashlib.sha256(f"{run_seed}\x00{key}\x00{policy}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def sample_query(sample: Sample) -> str:
    """The query: the sample's own (`query` attribute, from richer adapters) or 'Segment the X.'."""
    return getattr(sample, "query", None) or f"Segment the {sample.structure}."


def base_row(sample: Sample, key: str, policy: str, query=None) -> dict:
    """The fields every row has; `query` is a `data.queries.Query` or None (referring default)."""
    return {
        "key": key,
        "policy": policy,
        "kind": query.kind if query is not None else "referring",
        "query": query.text if query is not None else sample_query(sample),
        "target": sample.structure,
        "modality": sample.modality,
        "origin": sample.origin,
        "image": str(sample.image),
        "mask": None if sample.mask is None else str(sample.mask),
        "expected_answer": query.answer if query is not None else None,
        "target_present": not getattr(sample, "negative", False),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


def run_policy(
    env: IbisEnv,
    policy: Policy,
    spec: str,
    image: np.ndarray,
    gt: np.ndarray,
    row: dict,
    seed: int,
    given: np.ndarray | None = None,
) -> tuple[dict, dict]:
    """One episode of `policy` (its spec string `spec`); returns (result row, latency row).
    `given`: an initial mask to refine (H x W bool), or None. Needs the image already embedded
    in the tool's cache for a fair latency split."""
    if hasattr(policy, "reseed"):
        policy.reseed(seed)
    dec0 = env.tool.timings.decoder_s
    t0 = time.perf_counter()
    init, prompt = given, "clicks"
    # each step's reward is the paper's (mean of S_format, S_ans, S_click, S_pseg, S_len), so an
    # episode's "return" is what GRPO's episode mode optimises (the mean over its actions)
    env.reward_fn = make_env_reward(row.get("expected_answer"), closed=row.get("kind") == "closed")
    if hasattr(policy, "initial_prompt"):
        init, prompt = policy.initial_prompt(env.tool, env.tool.embed(image), gt), "box"
    ep = run_episode(env, policy, image, row["query"], gt, init_mask=init, image_name=row["image"])
    total = time.perf_counter() - t0
    final = ep.final_mask
    fmt = [format_check(s.response) for s in ep.steps]
    curve = ep.iou_curve
    init_iou = None if init is None else iou(init, gt)
    if prompt == "box":
        curve = [init_iou, *curve]  # the box prompt counts as the first interaction
    out = {
        **row,
        "prompt": prompt,
        "steps": len(ep.steps),
        "step_kinds": [s.kind for s in ep.steps],
        "clicks": [list(c) for c in ep.clicks],
        "ious": [_r(v) for v in curve],
        "step_ious": [_r(s.iou) for s in ep.steps],
        "init_iou": _r(init_iou),
        **{k: _r(v) for k, v in mask_scores(final, gt).items()},
        "stop_reason": ep.stop_reason,
        "return": _r(sum(s.reward for s in ep.steps) / len(ep.steps)) if ep.steps else None,
        "answer": ep.answer,
        "format_errors": sum(e is not None for e in fmt),
        "format_error_messages": [e for e in fmt if e is not None],
        "reasoning": [(parse_response(s.response).think or "")[:REASONING_CHARS] for s in ep.steps],
        "final_mask": rle_encode(final),
        "error": None,
    }
    policy_s = sum(s.policy_s for s in ep.steps)
    decoder_s = env.tool.timings.decoder_s - dec0
    latency = {
        "key": row["key"],
        "policy": spec,
        "policy_s": round(policy_s, 4),
        "decoder_s": round(decoder_s, 4),
        "episode_s": round(total, 4),
    }
    return out, latency


def evaluate_sample(
    env: IbisEnv, policies: dict[str, Policy], sample: Sample, key: str, run_seed: int, query=None
) -> tuple[list[dict], list[dict]]:
    """Every policy of `policies` ({spec: policy}) on `sample`: (result rows, latency rows).
    `query`: a `data.queries.Query` (a refinement query brings its perturbed initial mask) or
    None. The image is encoded once; its encoder time goes into every latency row as
    `encoder_s` (shared by the sample's episodes, not summed over them)."""
    rows = {spec: base_row(sample, key, spec, query) for spec in policies}
    try:
        image, gt = sample.load()
        if gt is None:
            raise IbisInputError(sample.image, "no reference mask for this sample")
        if not gt.any() and not getattr(sample, "negative", False):
            # an empty target is only meaningful on a sample marked absent on purpose
            raise IbisInputError(sample.mask, "reference mask is empty")
        enc0 = env.tool.timings.encoder_s
        env.tool.embed(image)
        encoder_s = round(env.tool.timings.encoder_s - enc0, 4)
        given = None
        if query is not None and query.perturbation:
            from ibisagent.data.perturb import perturb_mask

            given = perturb_mask(gt, query.perturbation, query.seed)
    except Exception as exc:  # the sample cannot be read: every policy's row says why
        err = _error_text(exc)
        return [{**r, "error": err} for r in rows.values()], []
    results, latencies = [], []
    for spec, policy in policies.items():
        try:
            seed = episode_seed(run_seed, key, spec)
            row, lat = run_policy(env, policy, spec, image, gt, rows[spec], seed, given)
            latencies.append({**lat, "encoder_s": encoder_s})
        except Exception as exc:
            row = {**rows[spec], "error": _error_text(exc)}
        results.append(row)
    return results, latencies


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, IbisInputError):
        return str(exc)
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno})" if where else ""
    return f"{exc.__class__.__name__}: {exc}{at}"

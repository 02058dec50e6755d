"""Synthesize one trajectory by driving the real environment (`IbisEnv`) with the reference
click rule (`ibisagent.clicker.next_click`) and writing grounded reasoning for each step.

Kinds (see `records.KINDS`):
- segment: from no mask, oracle clicks until IoU >= threshold, then stop with the answer;
- refine: the same from a seeded corruption of the reference (`data.perturb`);
- self_correction: a deliberately wrong click (train=False), the worse mask observed, a
  corrective click whose reasoning notices the mistake, then on as `segment`;
- discard: the episode starts from another structure's mask; the agent discards it
  (`Discard Mask`, our protocol extension) and segments from scratch;
- negative: the target is absent; one stop turn answering "no";
- vqa: a yes/no presence question answered by one stop turn, no clicks.
Samples that cannot make a good trajectory raise `Skip` with the reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from ibisagent.clicker import error_distance, next_click
from ibisagent.data.pairs import Sample
from ibisagent.data.structures import lookup
from ibisagent.env.env import IbisEnv
from ibisagent.env.protocol import format_response
from ibisagent.geometry import pixel_to_norm
from ibisagent.metrics import iou
from ibisagent.synth import reasoning as R
from ibisagent.synth.facts import click_region, position_words, state_facts
from ibisagent.synth.plan import Item
from ibisagent.synth.records import SynthStep, Trajectory
from ibisagent.synth.storage import Store


class Skip(Exception):
    """This item gives no usable trajectory; the message says why."""


@dataclass
class SynthConfig:
    """iou_threshold: stop when reached (0.8 as released); max_clicks: clicks per trajectory;
    min_final_iou: trajectories that end below it are skipped; worse_by: how much IoU a
    deliberately wrong click must cost."""

    iou_threshold: float = 0.8
    max_clicks: int = 20
    min_final_iou: float = 0.5
    worse_by: float = 0.05
    seed: int = 0


@dataclass
class Context:
    """What one worker needs: the environment over its one tool, the file store, the run's
    samples (to find other structures of the same image), an optional teacher."""

    env: IbisEnv
    store: Store
    config: SynthConfig
    samples: list[Sample]
    teacher: object | None = None
    by_image: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.samples):
            if not s.negative:
                self.by_image.setdefault(f"{s.image_key}@{s.frame}", []).append(i)


def synthesize(ctx: Context, item: Item, image: np.ndarray, gt: np.ndarray | None) -> Trajectory:
    """The trajectory of `item` on `image` (H x W x 3 uint8) with reference `gt` (H x W bool);
    its step overlays are written only when it is kept (raises Skip otherwise)."""
    try:
        traj = _synthesize(ctx, item, image, gt)
    except BaseException:
        ctx.store.discard()
        raise
    ctx.store.commit()
    return traj


def _synthesize(ctx: Context, item: Item, image: np.ndarray, gt: np.ndarray | None) -> Trajectory:
    sample = ctx.samples[item.index]
    H, W = image.shape[:2]
    gt = np.zeros((H, W), bool) if gt is None or sample.negative else np.asarray(gt, bool)
    if not sample.negative:
        if not gt.any():
            raise Skip("the reference mask is empty")
        if gt.all():
            raise Skip("the reference mask covers the whole image")
    group = f"{sample.image_key}@{sample.frame}"
    from ibisagent.io.rle import rle_encode

    traj = Trajectory(
        id=item.key,
        sample_id=sample.id,
        kind=item.kind,
        query=item.query.text,
        query_kind=item.query.kind,
        structure=sample.structure,
        modality=sample.modality,
        answer=item.query.answer,
        target_present=not sample.negative,
        image_size=(H, W),
        image_file=ctx.store.source(group, image),
        gt_file=ctx.store.mask(item.key.rsplit("|", 1)[0], gt),
        gt_mask=rle_encode(gt),
        seed=ctx.config.seed,
        reasoning_source="template" if ctx.teacher is None else f"teacher:{ctx.teacher.model}",
    )
    rng = random.Random(f"{ctx.config.seed}:{item.key}:text")
    if item.kind in ("negative", "vqa"):
        return _one_turn(ctx, traj, item, image, gt, rng)
    init, wrong_at = None, None
    if item.kind == "refine":
        from ibisagent.data.perturb import perturb_mask

        init = perturb_mask(gt, item.query.perturbation, ctx.config.seed)
        traj.init_source = item.query.perturbation
        if iou(init, gt) >= ctx.config.iou_threshold:
            raise Skip("the corrupted mask is still good; nothing to refine")
    elif item.kind == "discard":
        init, traj.init_source = _other_structure(ctx, sample, gt, group)
    elif item.kind == "self_correction":
        wrong_at = rng.uniform(0.4, ctx.config.iou_threshold)  # err once the mask is this good
    return _clicks(ctx, traj, group, image, gt, rng, init, wrong_at, discard=item.kind == "discard")


def _think(ctx: Context, draft: str, facts: list, kind: str, structure: str, key: str) -> str:
    if ctx.teacher is None:
        return draft
    return ctx.teacher.rewrite(draft, facts, kind, structure, key)


def _one_turn(ctx, traj: Trajectory, item: Item, image, gt, rng) -> Trajectory:
    sample = ctx.samples[item.index]
    f = state_facts(sample.structure, gt, np.zeros_like(gt))
    if sample.negative:
        info = lookup(sample.structure)
        shown = sorted({lookup(ctx.samples[i].structure).region for i in _group_indices(ctx, sample)} - {"any"})
        if info is None or not shown:
            raise Skip("no body-region facts to explain why the target is absent")
        from ibisagent.data.queries import modality_noun

        draft = R.absent_reasoning(rng, sample.structure, info.region, shown, modality_noun(sample))
        facts = [f, {"region": info.region, "shown": shown}]
    else:
        draft = R.presence_reasoning(rng, f)
        facts = [f]
    think = _think(ctx, draft, facts, "stop", sample.structure, traj.id)
    env = ctx.env
    obs, _ = env.reset(image, traj.query, gt_mask=gt, image_name=traj.id)
    traj.obs_files.append(ctx.store.observation(_group(sample), traj.id, 1, image, None))
    traj.obs_texts.append(obs.text)
    response = format_response(think, "stop", answer=traj.answer)
    prev_iou = env.current_iou()
    env.step(response)
    rec = env.episode.steps[-1]
    traj.steps.append(SynthStep(1, response, rec.kind, iou=rec.iou, prev_iou=prev_iou, facts=f.to_dict()))
    return traj


def _group(sample: Sample) -> str:
    return f"{sample.image_key}@{sample.frame}"


def _group_indices(ctx: Context, sample: Sample) -> list[int]:
    return [i for i in ctx.by_image.get(_group(sample), []) if lookup(ctx.samples[i].structure) is not None]


def _other_structure(ctx: Context, sample: Sample, gt: np.ndarray, group: str) -> tuple[np.ndarray, str]:
    """Another annotated structure's mask on the same image that barely overlaps the target."""
    for i in ctx.by_image.get(group, []):
        other = ctx.samples[i]
        if other.structure == sample.structure:
            continue
        try:
            _, m = other.load()
        except Exception:
            continue
        if m is not None and m.shape == gt.shape and m.any() and not m.all() and iou(m, gt) < 0.2:
            return np.asarray(m, bool), other.structure
    raise Skip("no other structure on this image to start from")


def _wrong_click(ctx: Context, gt: np.ndarray, rng: random.Random) -> tuple[int, int, int] | None:
    """A click that makes the current mask clearly worse (previewed with the same tool call the
    environment will make): a positive click on background near the target, or a negative
    click deep inside the correctly covered part."""
    env = ctx.env
    mask = env.mask
    H, W = gt.shape
    side = max(H, W)
    candidates = []
    band = error_distance(~gt)  # distance of background pixels to the target (or the border)
    ring = (band > 0.04 * side) & (band < 0.2 * side) & ~mask
    ys, xs = np.nonzero(ring)
    for j in rng.sample(range(len(xs)), min(3, len(xs))):
        candidates.append((int(xs[j]), int(ys[j]), 1))
    tp = gt & mask
    if tp.any():
        d = error_distance(tp)
        r, c = np.unravel_index(int(np.argmax(d)), d.shape)
        candidates.insert(rng.randrange(len(candidates) + 1), (int(c), int(r), 0))
    before = iou(mask, gt)
    for x, y, label in candidates:
        pts = np.array(env.points + [(x, y)])
        out = env.tool.predict(env.embedding, pts, np.array(env.labels + [label]), env.logits)
        if iou(out.mask, gt) < before - ctx.config.worse_by:
            return x, y, label
    return None


def _clicks(ctx, traj: Trajectory, group: str, image, gt, rng, init, wrong_at, discard: bool) -> Trajectory:
    cfg, env, s = ctx.config, ctx.env, traj.structure
    H, W = gt.shape
    env.max_steps = cfg.max_clicks + 3
    obs, _ = env.reset(image, traj.query, gt_mask=gt, init_mask=init, image_name=traj.id)
    traj.obs_texts.append(obs.text)
    if init is not None:
        from ibisagent.io.rle import rle_encode

        traj.init_mask = rle_encode(init)
    traj.obs_files.append(ctx.store.observation(group, traj.id, 1, image, env.mask))
    wrong_before, wrong_label = None, None
    n_clicks = 0
    while True:
        t = env.t + 1
        before = state_facts(s, gt, env.mask)
        cur = before.iou
        click = next_click(env.mask, gt, clicked=env.points)
        train, tag, step_facts = True, "", before.to_dict()
        # the environment ends an episode on the same action three times in a row: stop before
        repeat = (
            click is not None and env.points[-2:] == [(click[0], click[1])] * 2 and env.labels[-2:] == [click[2]] * 2
        )
        done = click is None or (t > 1 and cur >= cfg.iou_threshold) or n_clicks >= cfg.max_clicks or repeat
        if traj.steps and traj.steps[-1].tag == "wrong":
            done = click is None  # a deliberately wrong click is always corrected
        if done and cur < cfg.min_final_iou:
            raise Skip(f"the tool reached only IoU {cur:.2f} after {n_clicks} clicks")
        if discard and t == 1:
            think = _think(ctx, R.discard_reasoning(rng, before), [before], "discard", s, f"{traj.id}:{t}")
            response, tag = format_response(think, "discard"), "discard"
        elif wrong_at is not None and (cur >= wrong_at or done) and wrong_before is None:
            wrong = _wrong_click(ctx, gt, rng)
            if wrong is None:
                raise Skip("no click makes this mask clearly worse")
            x, y, label = wrong
            where = position_words(*pixel_to_norm(x, y, W, H))
            think = R.wrong_click_reasoning(rng, before, label, where)
            kind = "positive" if label == 1 else "negative"
            response, train, tag = format_response(think, kind, *pixel_to_norm(x, y, W, H)), False, "wrong"
            wrong_before, wrong_label = before, label
            n_clicks += 1
        elif done:
            think = _think(ctx, R.stop_reasoning(rng, before), [before], "stop", s, f"{traj.id}:{t}")
            response = format_response(think, "stop", answer=traj.answer)
        else:
            x, y, label, _ = click
            region = click_region(gt, env.mask, x, y, label)
            if region is None:
                raise Skip("the click simulator's click is outside the error regions")
            note = ""
            if traj.steps and traj.steps[-1].tag == "wrong":
                note, tag = R.notice_sentence(rng, wrong_label, wrong_before, before), "correction"
            draft = R.click_reasoning(rng, before, label, region, t, note)
            kind = "positive" if label == 1 else "negative"
            facts = [before, region] + ([wrong_before] if tag == "correction" else [])
            think = _think(ctx, draft, facts, kind, s, f"{traj.id}:{t}")
            response = format_response(think, kind, *pixel_to_norm(x, y, W, H))
            step_facts = {**step_facts, "region": None if region is None else region.__dict__}
            n_clicks += 1
        prev_iou = env.current_iou()
        obs, _, terminated, truncated, _ = env.step(response)
        rec = env.episode.steps[-1]
        traj.steps.append(
            SynthStep(t, response, rec.kind, train, tag, rec.click, rec.mask, rec.iou, prev_iou, step_facts)
        )
        if rec.kind == "stop":
            return traj
        if terminated or truncated:
            raise Skip(f"the episode ended early ({env.episode.stop_reason})")
        traj.obs_files.append(ctx.store.observation(group, traj.id, t + 1, image, env.mask))
        traj.obs_texts.append(obs.text)

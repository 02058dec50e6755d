"""A synthesis run: plan, shards, worker processes, resume, summary and exports.

The plan (`plan.plan_items`) is cut into shards of `shard_size` items. A shard is written
whole and atomically to `shards/NNNNN.jsonl` when all its items are done, so a killed run
leaves complete shards or none; a rerun with the same folder and settings does the missing
shards only. Each worker process builds one tool and reuses it (embeddings cached per image;
items are grouped by image). Results do not depend on the worker count or the backend.

Backends: `process` (a local process pool, the default) or `ray` (one Ray actor per worker,
each loading the tool once and making whole shards, on a local Ray started with
`num_cpus=workers` or on the cluster at `ray_address` / `$RAY_ADDRESS`; a cluster's nodes must
see the dataset and the output folder at the same paths).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ibisagent.errors import IbisInputError
from ibisagent.io.images import atomic_write_bytes
from ibisagent.synth.generate import Context, Skip, SynthConfig, synthesize
from ibisagent.synth.plan import DEFAULT_MIX, Item, plan_items
from ibisagent.synth.records import Trajectory

RESUME_KEYS = (
    "data", "split", "seed", "mix", "tool", "tool_kwargs", "synth", "max_pixels", "limit", "shard_size", "teacher",
)  # fmt: skip


@dataclass
class JobConfig:
    """`data`: anything `data.sources.open_dataset` reads; `threads`: torch threads per
    worker; `embedding_cache`: a folder of encoder outputs (`train.embedding_cache`) to reuse;
    `teacher`: {"base_url", "model", "cache_dir"} or None (template reasoning only);
    `backend`: "process" or "ray"; `ray_address`: a Ray cluster (else $RAY_ADDRESS, else a
    local Ray with `workers` CPUs). Neither changes the output, so a run may resume on the other."""

    data: str
    seed: int = 0
    workers: int = 1
    threads: int = 1
    shard_size: int = 16
    limit: int | None = None
    split: str = "all"  # all, train or heldout images (data.splits.take_split)
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    tool: str = "litemedsam"
    tool_kwargs: dict = field(default_factory=dict)
    synth: dict = field(default_factory=lambda: asdict(SynthConfig()))
    max_pixels: int = 512 * 512
    embedding_cache: str | None = None
    teacher: dict | None = None
    backend: str = "process"
    ray_address: str | None = None


BACKENDS = ("process", "ray")


def load_plan(cfg: dict) -> tuple[list, list[Item]]:
    """(samples incl. absent-target ones, items): the same in every process."""
    from ibisagent.data.queries import absent_targets
    from ibisagent.data.sources import open_dataset
    from ibisagent.data.splits import take_split

    report = open_dataset(cfg["data"])
    samples = take_split(report.samples, cfg.get("split", "all"))[: cfg["limit"]]
    if not samples:
        raise IbisInputError(cfg["data"], "no samples")
    negatives = absent_targets(samples, cfg["seed"]) if max(cfg["mix"].get(k, 0) for k in ("negative", "vqa")) else []
    everything = samples + negatives
    return everything, plan_items(samples, negatives, cfg["mix"], cfg["seed"])


def shards_of(items: list[Item], size: int) -> list[list[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def shard_path(out: Path, i: int) -> Path:
    return out / "shards" / f"{i:05d}.jsonl"


_W: dict = {}  # per-process state: context, plan, image cache


def _init(cfg: dict, out: str) -> None:
    """A pool worker's tool, environment and store; it ends when the parent process does."""
    import torch

    from ibisagent.lifetime import die_with_parent

    die_with_parent()

    from ibisagent.env.env import IbisEnv
    from ibisagent.synth.storage import Store
    from ibisagent.tools import make_tool

    torch.set_num_threads(max(1, int(cfg["threads"])))
    key = json.dumps([cfg["tool"], cfg["tool_kwargs"]], sort_keys=True)
    if _W.get("tool_key") != key:
        _W["tool"], _W["tool_key"] = make_tool(cfg["tool"], **cfg["tool_kwargs"]), key
    samples, items = load_plan(cfg)
    teacher = None
    if cfg.get("teacher"):
        from ibisagent.synth.teacher import Teacher

        teacher = Teacher(**cfg["teacher"])
    ctx = Context(IbisEnv(_W["tool"]), Store(out, cfg["max_pixels"]), SynthConfig(**cfg["synth"]), samples, teacher)
    _W.update(ctx=ctx, shards=shards_of(items, cfg["shard_size"]), out=Path(out), cfg=cfg)


def _load(index: int):
    """(image, mask) of sample `index`, primed into the tool's embedding cache from disk."""
    ctx, cfg = _W["ctx"], _W["cfg"]
    if _W.get("loaded", (None,))[0] == index:
        return _W["loaded"][1]
    sample = ctx.samples[index]
    image, gt = sample.load()
    if cfg.get("embedding_cache") and sample.loader is None:
        from ibisagent.tools.base import image_key
        from ibisagent.train.embedding_cache import cache_path
        from ibisagent.train.tool.evaluate import prime_cache

        f = cache_path(Path(cfg["embedding_cache"]), Path(sample.image))
        if f.exists() and ctx.env.tool.cache.get(image_key(image)) is None:
            prime_cache(ctx.env.tool, image, f)
    _W["loaded"] = (index, (image, gt))
    return image, gt


def _run_shard(i: int) -> dict:
    """Make shard `i`'s trajectories and write the shard file; returns its counts and timings."""
    ctx: Context = _W["ctx"]
    tool = ctx.env.tool
    t0, enc0, dec0, ren0 = time.perf_counter(), tool.timings.encoder_s, tool.timings.decoder_s, ctx.store.render_s
    lines, stats = [], Counter()
    for item in _W["shards"][i]:
        try:
            image, gt = _load(item.index)
            traj = synthesize(ctx, item, image, gt)
            lines.append(json.dumps({"status": "ok", "trajectory": traj.to_dict()}))
            stats[f"ok:{item.kind}"] += 1
        except (Skip, IbisInputError) as exc:
            lines.append(json.dumps({"status": "skipped", "key": item.key, "kind": item.kind, "reason": str(exc)}))
            stats[f"skipped:{item.kind}"] += 1
        except OSError:
            raise  # a full disk or a vanished folder stops the run; a rerun resumes
        except Exception as exc:  # a tool failure on one sample: report it, go on
            reason = f"{exc.__class__.__name__}: {exc}"
            lines.append(json.dumps({"status": "skipped", "key": item.key, "kind": item.kind, "reason": reason}))
            stats[f"skipped:{item.kind}"] += 1
    timing = {
        "total_s": time.perf_counter() - t0,
        "encoder_s": tool.timings.encoder_s - enc0,
        "decoder_s": tool.timings.decoder_s - dec0,
        "render_s": ctx.store.render_s - ren0,
    }
    lines.append(json.dumps({"status": "stats", "counts": dict(stats), "timing": timing}))
    atomic_write_bytes(shard_path(_W["out"], i), ("\n".join(lines) + "\n").encode())
    return {"shard": i, "counts": dict(stats), "timing": timing}


def read_shard(path: Path) -> tuple[list[Trajectory], list[dict], dict]:
    """(trajectories, skipped entries, stats) of one shard file."""
    trajs, skipped, stats = [], [], {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["status"] == "ok":
            trajs.append(Trajectory.from_dict(row["trajectory"]))
        elif row["status"] == "skipped":
            skipped.append(row)
        else:
            stats = row
    return trajs, skipped, stats


def _fingerprint(cfg: dict, samples: list) -> dict:
    keys = {k: cfg[k] for k in RESUME_KEYS}
    if keys["split"] == "all":
        del keys["split"]  # runs written before the option existed resume unchanged
    keys["teacher"] = None if not cfg.get("teacher") else {k: cfg["teacher"][k] for k in ("base_url", "model")}
    keys["samples_sha"] = hashlib.sha1("\n".join(s.id for s in samples).encode()).hexdigest()
    return keys


ProgressFn = Callable[[int, int, dict], None]


def run_synth(cfg: JobConfig, out: str | Path, fresh: bool = False, progress: ProgressFn | None = None) -> dict:
    """Run (or resume) a synthesis job into `out`; returns the summary (also `summary.json`).
    `progress(done_shards, total_shards, last_shard_result)` after each shard."""
    out = Path(out)
    d = asdict(cfg)
    if cfg.backend not in BACKENDS:
        raise IbisInputError("--backend", f"unknown backend {cfg.backend!r}; choose from {', '.join(BACKENDS)}")
    if cfg.backend == "ray":
        _import_ray()  # before any work: a missing Ray is one clear line
    samples, items = load_plan(d)
    shards = shards_of(items, cfg.shard_size)
    meta_path = out / "synth.json"
    meta = _fingerprint(d, samples)
    if meta_path.exists() and not fresh:
        old = json.loads(meta_path.read_text())
        diff = [k for k in meta if old.get(k) != meta[k]]
        if diff:
            raise IbisInputError(
                out, f"holds a run with other settings ({', '.join(diff)}); use --fresh or a new --out"
            )
    if fresh:
        for p in (out / "shards").glob("*.jsonl") if (out / "shards").exists() else []:
            p.unlink()
    atomic_write_bytes(meta_path, json.dumps(meta, indent=1).encode())
    for stale in (out / "shards").glob(".*.tmp") if (out / "shards").exists() else []:
        stale.unlink(missing_ok=True)  # a temp file left by a killed run; never read as data
    todo = [i for i in range(len(shards)) if not shard_path(out, i).exists()]
    done = len(shards) - len(todo)
    if progress:
        progress(done, len(shards), {})
    if todo and cfg.workers <= 1 and cfg.backend == "process":
        _init(d, str(out))
        for i in todo:
            res = _run_shard(i)
            done += 1
            if progress:
                progress(done, len(shards), res)
    elif todo:
        start = len(shards) - len(todo)

        def record(res: dict) -> None:
            if progress:
                progress(start + res["_n"], len(shards), res)

        (_ray_pool if cfg.backend == "ray" else _pool)(d, out, todo, record)
    return finish(out, len(shards))


def _pool(d: dict, out: Path, todo: list[int], record) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(
        max_workers=d["workers"], mp_context=mp.get_context("spawn"), initializer=_init, initargs=(d, str(out))
    ) as pool:
        pending = {pool.submit(_run_shard, i) for i in todo}
        n = 0
        try:
            while pending:
                ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in ready:
                    n += 1
                    record({**fut.result(), "_n": n})
        except BrokenProcessPool:
            raise RuntimeError("a worker process died (out of memory?); rerun the same command to resume") from None
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _import_ray():
    try:
        import ray
    except ImportError:
        raise IbisInputError("--backend ray", "Ray is not installed (pip install 'ibisagent[ray]')") from None
    return ray


class _ShardWorker:
    """A Ray actor: one worker's state (`_init`: tool, plan, store) built once; makes whole shards."""

    def __init__(self, d: dict, out: str) -> None:
        _init(d, out)

    def run(self, i: int) -> dict:
        return _run_shard(i)


def _ray_pool(d: dict, out: Path, todo: list[int], record) -> None:
    """`_pool` on Ray: min(workers, shards) actors, each given its next shard when it finishes one
    (the same shard files, written atomically by the actor, as with processes)."""
    ray = _import_ray()
    address = d.get("ray_address") or os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started:
        quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **quiet)
        else:  # a private local Ray (not one that $RAY_ADDRESS might name)
            ray.init(address="local", num_cpus=d["workers"], **quiet)
    Worker = ray.remote(num_cpus=1, max_restarts=0)(_ShardWorker)
    actors = [Worker.remote(d, str(out)) for _ in range(min(d["workers"], len(todo)))]
    queue, running, n = list(todo), {}, 0
    try:
        for a in actors:
            if queue:
                running[a.run.remote(queue.pop(0))] = a
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            a = running.pop(ready[0])
            try:
                res = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                raise RuntimeError("a Ray worker died (out of memory?); rerun the same command to resume") from None
            n += 1
            record({**res, "_n": n})
            if queue:
                running[a.run.remote(queue.pop(0))] = a
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()


def finish(out: Path, n_shards: int) -> dict:
    """Combine the shards into `trajectories.jsonl`, `skipped.jsonl` and `summary.json`."""
    trajs, skipped, timing, counts = [], [], Counter(), Counter()
    for i in range(n_shards):
        t, s, st = read_shard(shard_path(out, i))
        trajs += t
        skipped += s
        timing.update(st.get("timing", {}))
        counts.update(st.get("counts", {}))
    atomic_write_bytes(out / "trajectories.jsonl", "".join(t.to_json() + "\n" for t in trajs).encode())
    atomic_write_bytes(out / "skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped).encode())
    reasons = Counter(s["reason"].split(" after ")[0].split(":")[0] for s in skipped)
    clicks = [sum(1 for s in t.steps if s.click is not None) for t in trajs if t.kind not in ("negative", "vqa")]
    total = timing.get("total_s", 0.0) or 1e-9
    summary = {
        "trajectories": len(trajs),
        "skipped": len(skipped),
        "by_kind": dict(sorted(counts.items())),
        "skip_reasons": dict(reasons.most_common(10)),
        "mean_clicks": round(sum(clicks) / len(clicks), 2) if clicks else None,
        "steps": sum(len(t.steps) for t in trajs),
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
        "time_share": {k[:-2]: round(timing.get(k, 0.0) / total, 3) for k in ("encoder_s", "decoder_s", "render_s")},
        "trajectories_per_min": round(60 * len(trajs) / total, 2),
    }
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1).encode())
    return summary


def load_trajectories(out: str | Path) -> list[Trajectory]:
    path = Path(out) / "trajectories.jsonl"
    if not path.exists():
        raise IbisInputError(path, "no trajectories here (run: ibisagent synth DATASET --out DIR)")
    return [Trajectory.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]

"""The evaluation harness: every policy on every sample, in parallel, resumable.

Each worker process builds its own tool and policies once, then takes samples (one task = one
sample and the policies it still lacks, so the image is encoded once for all of them). Rows are
appended to `results.jsonl` / `latency.jsonl` line by line as samples finish; a rerun with the
same output folder skips finished (sample, policy) episodes. When the run ends the files are
rewritten in dataset order, so identical seeds give identical results whatever the worker count.
With a tool server (`tool="http://..."`) the workers are threads instead (`_run_threads`): the
model runs elsewhere, so `workers` bounds the episodes, and the requests, in flight at once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ibisagent.data.pairs import Sample
from ibisagent.errors import IbisInputError
from ibisagent.eval.results import LATENCY, RESULTS, RUN_JSON, RunData, load_run, write_meta
from ibisagent.io.jsonl import JsonlAppender, write_jsonl

# What must match for a rerun to continue an existing run folder.
RESUME_KEYS = ("tool", "tool_kwargs", "max_steps", "seed", "queries", "negatives", "samples_sha")


@dataclass
class RunConfig:
    """An evaluation run. `policies`: make_policy specs; `tool`/`tool_kwargs`: make_tool's;
    `threads`: torch threads per worker (default: the CPU count shared among the workers)."""

    data: list[str]
    policies: list[str]
    tool: str = "litemedsam"
    tool_kwargs: dict = field(default_factory=dict)
    max_steps: int = 20
    seed: int = 0
    workers: int = 1
    threads: int | None = None
    limit: int | None = None
    retry_errors: bool = False
    queries: list[str] = field(default_factory=list)  # query kinds (data.queries.KINDS); [] = "Segment the X."
    negatives: bool = False  # add absent-target samples (answer "no"; the right move is to stop)
    split: str = "all"  # all, train or heldout images (data.splits.take_split)


def load_samples(
    paths: list[str | Path], limit: int | None = None, split: str = "all"
) -> tuple[list[Sample], list[str]]:
    """(samples, skipped) of every dataset path, via `ibisagent.data.sources.open_dataset` (any
    adapter; its skipped entries are kept, as text), else `read_pairs_csv` (a folder of dataset
    folders is searched one level down); only the `split` images (`data.splits.take_split`)."""
    from ibisagent.data.splits import take_split

    try:
        from ibisagent.data.sources import open_dataset as load_dataset
    except ImportError:
        load_dataset = None
    samples: list[Sample] = []
    skipped: list[str] = []
    for p in paths:
        got = load_dataset(p) if load_dataset is not None else _read_pairs(Path(p))
        samples += list(getattr(got, "samples", got))
        skipped += [str(s) for s in getattr(got, "skipped", [])]
    samples = take_split(samples, split)
    if not samples:
        raise IbisInputError(
            ", ".join(map(str, paths)), "no samples" + (f" in the {split} split" if split != "all" else "")
        )
    return samples[:limit], skipped


def _read_pairs(path: Path) -> list[Sample]:
    from ibisagent.data.pairs import read_pairs_csv

    if path.is_dir() and not (path / "pairs.csv").exists():
        found = sorted(path.glob("*/pairs.csv"))
        if not found:
            raise IbisInputError(path, "no pairs.csv here or in its sub-folders")
        return [s for f in found for s in read_pairs_csv(f)]
    return read_pairs_csv(path)


def load_items(cfg: dict) -> tuple[list[tuple[Sample, object]], list[str], list[str]]:
    """(items, keys, skipped): items are (sample, query or None), one per sample and query kind
    (negative samples get the closed question only). Deterministic, so every worker rebuilds
    the same list from the configuration."""
    samples, skipped = load_samples(cfg["data"], cfg["limit"], cfg.get("split", "all"))
    if not cfg.get("queries"):
        if cfg.get("negatives"):
            raise IbisInputError("--negatives", "absent-target samples need query kinds (e.g. --queries closed)")
        return [(s, None) for s in samples], sample_keys(samples), skipped
    from ibisagent.data.queries import absent_targets, build_queries

    pairs = build_queries(samples, cfg["queries"], cfg["seed"])
    if cfg.get("negatives"):
        pairs += build_queries(absent_targets(samples, cfg["seed"]), ["closed"], cfg["seed"])
    return pairs, unique_keys([f"{s.id}|{q.kind}" for s, q in pairs]), skipped


def sample_keys(samples: list[Sample]) -> list[str]:
    """Unique, stable keys: the sample id, with '#2', '#3', ... for repeats."""
    return unique_keys([s.id for s in samples])


def unique_keys(ids: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        keys.append(i if seen[i] == 1 else f"{i}#{seen[i]}")
    return keys


_TOOLS: dict[str, object] = {}  # one tool per process and setup, reused by later runs in the process


def _runtime(cfg: dict, specs: list[str]):
    """(env, {spec: policy}) for one process."""
    import json

    import torch

    from ibisagent.env.env import IbisEnv
    from ibisagent.policies import make_policy
    from ibisagent.tools import make_tool

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    key = json.dumps([cfg["tool"], cfg["tool_kwargs"]], sort_keys=True)
    if key not in _TOOLS:
        _TOOLS.clear()  # keep at most one model in memory
        _TOOLS[key] = make_tool(cfg["tool"], **cfg["tool_kwargs"])
    env = IbisEnv(_TOOLS[key], max_steps=cfg["max_steps"])
    return env, {s: make_policy(s) for s in specs}


_WORKER: dict = {}


def _init_worker(cfg: dict, specs: list[str], items: tuple | None = None) -> None:
    """Build this process's tool and policies, and its own copy of the items (samples may
    carry loaders that cannot be pickled, so workers read the dataset themselves). A worker
    ends when the parent process does (kill -9 included)."""
    from ibisagent.lifetime import die_with_parent

    die_with_parent()
    _WORKER["env"], _WORKER["policies"] = _runtime(cfg, specs)
    _WORKER["seed"] = cfg["seed"]
    _WORKER["items"], _WORKER["keys"] = items if items is not None else load_items(cfg)[:2]


def _work(index: int, key: str, specs: list[str]) -> tuple[list[dict], list[dict]]:
    from ibisagent.eval.episodes import evaluate_sample

    if _WORKER["keys"][index] != key:
        raise RuntimeError(f"the dataset changed while running (sample {index} is not {key})")
    policies = {s: _WORKER["policies"][s] for s in specs}
    sample, query = _WORKER["items"][index]
    return evaluate_sample(_WORKER["env"], policies, sample, key, _WORKER["seed"], query)


def _meta(cfg: RunConfig, keys: list[str], policies: list[str]) -> dict:
    sha = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    return {
        "format": 1,
        "data": [str(d) for d in cfg.data],
        "policies": policies,
        "tool": cfg.tool,
        "tool_kwargs": cfg.tool_kwargs,
        "max_steps": cfg.max_steps,
        "seed": cfg.seed,
        "limit": cfg.limit,
        "queries": list(cfg.queries),
        "negatives": cfg.negatives,
        "n_samples": len(keys),
        "samples_sha": sha,
        "status": "running",
    }


def _check_resume(old: dict, new: dict, out: Path) -> None:
    for k in RESUME_KEYS:
        if old.get(k) != new.get(k):
            what = "data (samples)" if k == "samples_sha" else k
            raise IbisInputError(
                out,
                f"holds a run with a different {what} ({old.get(k)!r} vs {new.get(k)!r}); use --fresh or another --out",
            )


def _canonical(rows: list[dict], keys: list[str], policies: list[str]) -> list[dict]:
    ki = {k: i for i, k in enumerate(keys)}
    pi = {p: i for i, p in enumerate(policies)}
    rows = [r for r in rows if r["key"] in ki and r["policy"] in pi]
    return sorted(rows, key=lambda r: (ki[r["key"]], pi[r["policy"]]))


ProgressFn = Callable[[int, int], None]


def run_eval(cfg: RunConfig, out: str | Path, fresh: bool = False, progress: ProgressFn | None = None) -> RunData:
    """Run (or continue) an evaluation into `out`; returns the run as read back.

    `progress(done, total)` is called with episode counts as samples finish. On an interruption
    (Ctrl-C, a worker dying) the rows so far are kept, run.json says "incomplete", and the
    exception propagates; rerunning the same call continues where it stopped.
    """
    from ibisagent.policies import make_policy

    out = Path(out)
    if not cfg.policies:
        raise IbisInputError("--policy", "give at least one policy")
    if len(set(cfg.policies)) != len(cfg.policies):
        raise IbisInputError(",".join(cfg.policies), "a policy is listed twice")
    for spec in cfg.policies:  # fail fast on a bad spec, before any work
        make_policy(spec)
    items, keys, skipped = load_items(asdict(cfg))
    meta = _meta(cfg, keys, list(cfg.policies))
    meta["skipped_at_load"] = skipped
    old = None
    if fresh:
        for name in (RESULTS, LATENCY, RUN_JSON):
            (out / name).unlink(missing_ok=True)
    elif (out / RUN_JSON).exists():
        old = load_run(out)
        _check_resume(old.meta, meta, out)
        meta["policies"] = old.policies + [p for p in cfg.policies if p not in old.policies]
    policies = meta["policies"]
    rows = old.rows if old else []
    lat = old.latency if old else []
    if cfg.retry_errors:
        rows = [r for r in rows if not r.get("error")]
    done = {(r["key"], r["policy"]) for r in rows}
    out.mkdir(parents=True, exist_ok=True)
    # Drop torn lines from an interrupted run before appending to the files again.
    write_jsonl(out / RESULTS, _canonical(rows, keys, policies))
    write_jsonl(out / LATENCY, _canonical(lat, keys, policies))
    started = time.time()
    write_meta(out, meta)
    todo = []
    for i, k in enumerate(keys):
        missing = [p for p in policies if (k, p) not in done]
        if missing:
            todo.append((i, k, missing))
    total, finished = len(keys) * len(policies), len(done)
    if progress:
        progress(finished, total)
    res_w, lat_w = JsonlAppender(out / RESULTS), JsonlAppender(out / LATENCY)
    status = "incomplete"

    def record(result: tuple[list[dict], list[dict]]) -> None:
        nonlocal finished
        for r in result[0]:
            res_w.write(r)
        for r in result[1]:
            lat_w.write(r)
        finished += len(result[0])
        if progress:
            progress(finished, total)

    threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.workers))
    cfg_d = {**asdict(cfg), "policies": policies, "threads": threads}
    try:
        if is_remote_tool(cfg.tool) and cfg.workers > 1 and len(todo) > 1:
            _run_threads(cfg_d, items, keys, todo, record)
        elif cfg.workers <= 1 or len(todo) <= 1:
            _init_worker(cfg_d, policies, (items, keys))
            for i, k, missing in todo:
                record(_work(i, k, missing))
        else:
            _run_pool(cfg_d, todo, record)
        status = "complete"
    finally:
        res_w.close()
        lat_w.close()
        final = load_run(out)
        write_jsonl(out / RESULTS, _canonical(final.rows, keys, policies))
        write_jsonl(out / LATENCY, _canonical(final.latency, keys, policies))
        meta.update(
            status=status,
            episodes_done=len(final.rows),
            errors=sum(1 for r in final.rows if r.get("error")),
            workers=cfg.workers,
            threads_per_worker=cfg_d["threads"],
            last_elapsed_s=round(time.time() - started, 2),
        )
        write_meta(out, meta)
    return load_run(out)


def is_remote_tool(spec: str) -> bool:
    """True for a tool server ("http://..."): no model in this process, so threads suffice."""
    return spec.startswith(("http://", "https://"))


def _record_as_completed(pending: set, record: Callable, uncancelled: tuple[type[BaseException], ...] = ()) -> None:
    """record(result) of each future as it completes. On an error the futures not yet started
    are cancelled (except for the exception types `uncancelled`) and the error is re-raised."""
    try:
        while pending:
            ready, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in ready:
                record(fut.result())
    except uncancelled:
        raise
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise


def _run_threads(cfg_d: dict, items: list, keys: list[str], todo: list, record: Callable) -> None:
    """`workers` threads, each with its own tool client, environment and policies (latency
    counters stay per episode): at most `workers` episodes, so at most `workers` policy and
    tool requests, in flight at once. For remote tools and policies, whose work is waiting."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ibisagent.env.env import IbisEnv
    from ibisagent.eval.episodes import evaluate_sample
    from ibisagent.policies import make_policy
    from ibisagent.tools import make_tool

    local = threading.local()

    def work(index: int, key: str, specs: list[str]) -> tuple[list[dict], list[dict]]:
        if not hasattr(local, "env"):
            local.env = IbisEnv(make_tool(cfg_d["tool"], **cfg_d["tool_kwargs"]), max_steps=cfg_d["max_steps"])
            local.policies = {s: make_policy(s) for s in cfg_d["policies"]}
        sample, query = items[index]
        pols = {s: local.policies[s] for s in specs}
        return evaluate_sample(local.env, pols, sample, key, cfg_d["seed"], query)

    with ThreadPoolExecutor(max_workers=cfg_d["workers"], thread_name_prefix="ibis-eval") as pool:
        _record_as_completed({pool.submit(work, i, k, missing) for i, k, missing in todo}, record)


def _run_pool(cfg_d: dict, todo: list, record: Callable) -> None:
    import multiprocessing as mp

    specs = cfg_d["policies"]
    with ProcessPoolExecutor(
        max_workers=cfg_d["workers"],
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(cfg_d, specs),
    ) as pool:
        pending = {pool.submit(_work, i, k, missing) for i, k, missing in todo}
        try:
            _record_as_completed(pending, record, uncancelled=(BrokenProcessPool,))
        except BrokenProcessPool:
            raise RuntimeError("a worker process died (out of memory?); rerun the same command to resume") from None

"""Trajectory synthesis speed: trajectories per minute on real data, and the share of time in
the encoder, the decoder and rendering (overlay + PNG writing).

    python bench/bench_synth.py [DATA] [--limit 40] [--workers 1] [--backend process|ray] [--embedding-cache DIR] [--tool SPEC]

DATA defaults to ../shared/data (else the bundled demo); `--limit 0` takes every sample. Runs
`ibisagent.synth.job.run_synth` into a temporary folder with the default mix and prints the
summary's figures as one table: trajectories per minute of wall time, and the share of the
workers' time spent in the image encoder, the mask decoder, rendering (overlay + PNG writing)
and the rest (click rule, reasoning text, image loading, shard writing). Without
`--embedding-cache` every image is encoded (synth reads no disk cache unless told to).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    shared = ROOT.parent / "shared" / "data"
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(shared if shared.exists() else ROOT / "ibisagent/assets/demo"))
    ap.add_argument("--limit", type=int, default=40, help="samples (of the dataset's order); 0: all")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--backend", default="process", choices=("process", "ray"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--embedding-cache", default=None, help="e.g. ~/.cache/ibisagent/embeddings")
    ap.add_argument("--tool", default="litemedsam", help="tool spec, e.g. litemedsam:original or litemedsam:PATH.pt")
    args = ap.parse_args()

    from ibisagent.synth.job import JobConfig, run_synth

    cfg = JobConfig(
        data=args.data,
        limit=args.limit or None,
        workers=args.workers,
        backend=args.backend,
        threads=args.threads,
        tool=args.tool,
        embedding_cache=str(Path(args.embedding_cache).expanduser()) if args.embedding_cache else None,
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        s = run_synth(cfg, out)
        wall = time.perf_counter() - t0
    share = dict(s["time_share"])
    share["other"] = max(0.0, 1.0 - sum(share.values()))
    rows = [
        ("data", args.data),
        ("tool", args.tool),
        ("samples", args.limit or "all"),
        ("backend, workers x threads", f"{args.backend}, {args.workers} x {args.threads}"),
        ("embedding cache", args.embedding_cache or "off"),
        ("trajectories (skipped)", f"{s['trajectories']} ({s['skipped']})"),
        ("by kind", ", ".join(f"{k}={v}" for k, v in s["by_kind"].items())),
        ("mean clicks", s["mean_clicks"]),
        ("wall s", f"{wall:.1f}"),
        ("trajectories / min (wall)", f"{60 * s['trajectories'] / wall:.1f}"),
        ("share encoder / decoder / render / other", " / ".join(f"{v:.2f}" for v in share.values())),
        (
            "worker s: encoder, decoder, render, total",
            ", ".join(f"{s['timing_s'].get(k, 0):.1f}" for k in ("encoder_s", "decoder_s", "render_s", "total_s")),
        ),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


if __name__ == "__main__":
    main()

"""Load test of the REST tool endpoint on loopback: latency percentiles and error counts.

    python bench/bench_serve.py                       # 200 requests, 8 concurrent, in-process server
    python bench/bench_serve.py --url http://127.0.0.1:8000 --requests 50

Phases: (1) upload the image (the one embedding); (2) `--clicks` sequential clicks as the web page
makes them (a session's `act` with the human policy's command; mask RLE + overlay returned), whose
p50/p95 is the "click -> new mask" latency; (3) `--requests` tool calls at `--concurrency` in flight (1-3
random clicks each, RLE only: what an RL reward calls). Prints p50/p95/max in ms and the count of
each HTTP status; exits 1 if any request failed with a 5xx or a transport error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

DEMO = Path(__file__).resolve().parents[1] / "ibisagent" / "assets" / "demo" / "images" / "15_X-Ray_chest.png"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary(name: str, lat_s: list[float], statuses: Counter, wall_s: float | None = None) -> dict:
    ms = [1000 * v for v in lat_s]
    row = {
        "phase": name,
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 1),
        "p95_ms": round(pct(ms, 95), 1),
        "max_ms": round(max(ms), 1) if ms else None,
        "status": dict(sorted(statuses.items())),
    }
    if wall_s:
        row["throughput_rps"] = round(len(ms) / wall_s, 2)
    print(
        f"{name:<12} n={row['n']:<4} p50={row['p50_ms']:>7.1f} ms  p95={row['p95_ms']:>7.1f} ms  "
        f"max={row['max_ms']:>7.1f} ms  status={row['status']}" + (f"  {row['throughput_rps']} req/s" if wall_s else "")
    )
    return row


async def bench(url: str, image: Path, clicks: int, requests: int, concurrency: int, seed: int) -> list[dict]:
    import httpx

    rng = np.random.default_rng(seed)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        t0 = time.perf_counter()
        r = await client.post("/v1/images", files={"image": (image.name, image.read_bytes(), "image/png")})
        r.raise_for_status()
        info = r.json()
        print(
            f"upload+embed {1000 * (time.perf_counter() - t0):.0f} ms  ({info['width']} x {info['height']}, id {info['image_id'][:8]})"
        )

        # (2) a person clicking in the page: each click is a human-policy command on a session
        # (the env runs the tool with all clicks so far and the previous logits)
        r = await client.post("/v1/sessions", json={"image_id": info["image_id"], "query": "bench"})
        r.raise_for_status()
        session = r.json()["session_id"]
        lat, st = [], Counter()
        for k in range(clicks):
            x, y = float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))
            sign = "p" if k == 0 or rng.integers(0, 2) else "n"
            t = time.perf_counter()
            r = await client.post(f"/v1/sessions/{session}/act", json={"command": f"{sign} {x:.4f},{y:.4f}"})
            lat.append(time.perf_counter() - t)
            st[r.status_code] += 1
        rows = [summary("page clicks", lat, st)]

        # (3) concurrent tool calls
        sem, lat, st = asyncio.Semaphore(concurrency), [], Counter()

        async def one(i: int):
            n = int(rng.integers(1, 4))
            body = {
                "image_id": info["image_id"],
                "points": rng.uniform(0, 1, (n, 2)).round(4).tolist(),
                "labels": [1] + rng.integers(0, 2, n - 1).tolist(),
                "coords": "norm",
            }
            async with sem:
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/tool/segment", json=body)
                    st[r.status_code] += 1
                except httpx.HTTPError as exc:
                    st[f"transport:{exc.__class__.__name__}"] += 1
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        rows.append(summary(f"tool x{concurrency}", lat, st, time.perf_counter() - t0))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an already running server (default: start one in-process on loopback)")
    ap.add_argument("--image", type=Path, default=DEMO)
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process tool")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    if args.url:
        rows = asyncio.run(bench(args.url, args.image, args.clicks, args.requests, args.concurrency, args.seed))
    else:
        import torch

        from ibisagent.app.api import create_app
        from ibisagent.app.background import running_server
        from ibisagent.app.config import ServeConfig

        torch.set_num_threads(args.threads)
        config = ServeConfig(threads=args.threads, workers=args.concurrency, max_queue=4 * args.concurrency)
        with running_server(create_app(config)) as url:
            rows = asyncio.run(bench(url, args.image, args.clicks, args.requests, args.concurrency, args.seed))
    bad = sum(n for row in rows for code, n in row["status"].items() if not str(code).isdigit() or int(code) >= 500)
    print(f"5xx or transport errors: {bad}")
    if args.json:
        from ibisagent.io.images import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

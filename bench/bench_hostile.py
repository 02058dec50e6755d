"""Hostile requests against a real `ibisagent serve` process, and the app-session memory abuse.

    python bench/bench_hostile.py                      # the catalogue + 40 actions on a 4096^2 image
    python bench/bench_hostile.py --side 1024 --actions 10 --no-overlays   # quick (what the test runs)

Starts `ibisagent serve` on a free loopback port, then
(1) sends the REST catalogue of issue 39 (the RLE that crashed the server, policy specs with paths
    and URLs, client timeouts and retries, cross-origin forms, a foreign Host, nested JSON, lying
    NIfTI headers, ...) and checks after each that the process lives and /healthz answers;
(2) uploads a `--side`^2 image, opens a session and makes `--actions` person clicks as the web app
    does, reading the server's resident memory (VmRSS) before and after.
Prints one JSON line: deaths, 5xx count, statuses per case, the memory growth and the configured
bound (the session byte bound plus the tool-state bound, what one session can make the server hold).
Exits 1 on a death, a 5xx, a failed /healthz or growth beyond the bound.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def png_bytes(side: int) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:side, 0:side]
    disc = ((xx - side / 2) ** 2 + (yy - side / 2) ** 2 < (side / 4) ** 2).astype(np.uint8) * 160
    img = (disc + (xx * 37 + yy * 11) % 60).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def lying_nifti() -> bytes:
    """A gzipped NIfTI-1 header claiming 1000 x 1000 x 216 int16 voxels, with 16 bytes of data."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, 1000, 1000, 216, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 4, 16)  # int16
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", hdr, 108, 352.0)
    struct.pack_into("<h", hdr, 254, 1)  # sform_code
    struct.pack_into("<4f", hdr, 280, 1, 0, 0, 0)
    struct.pack_into("<4f", hdr, 296, 0, 1, 0, 0)
    struct.pack_into("<4f", hdr, 312, 0, 0, 1, 0)
    hdr[344:348] = b"n+1\x00"
    return gzip.compress(bytes(hdr) + b"\0" * 4 + b"\0" * 16)


def catalogue(image_id: str) -> list[tuple[str, dict]]:
    """(case, httpx request kwargs) of hostile requests; each must get a 4xx."""
    wrap = 2**63 - 1
    seg = "/v1/segment"
    tool = "/v1/tool/segment"
    q = {"image_id": image_id, "query": "x"}
    raw_rle = b'{"image_id":"%s","prev_mask":{"size":[64,64],"counts":[9223372036854775807,9223372036854775807,4098]}}'
    return [
        (
            "rle int64 wrap",
            {"url": tool, "content": raw_rle % image_id.encode(), "headers": {"content-type": "application/json"}},
        ),
        (
            "rle beyond int64",
            {"url": tool, "json": {"image_id": image_id, "prev_mask": {"size": [64, 64], "counts": [2**70]}}},
        ),
        (
            "rle huge size",
            {"url": tool, "json": {"image_id": image_id, "prev_mask": {"size": [2**31, 2**31], "counts": [wrap]}}},
        ),
        (
            "rle negative",
            {"url": tool, "json": {"image_id": image_id, "prev_mask": {"size": [64, 64], "counts": [-1, 4097]}}},
        ),
        ("policy path", {"url": seg, "json": {**q, "policy": "compact:/etc/passwd"}}),
        ("policy url", {"url": seg, "json": {**q, "policy": "openai:http://127.0.0.1:9/v1"}}),
        (
            "policy url form",
            {"url": seg, "data": {**q, "policy": "openai:http://127.0.0.1:9/v1"}, "files": {"x": (None, "")}},
        ),
        ("client timeout", {"url": seg, "json": {**q, "policy_options": {"timeout": 1e9, "retries": 99}}}),
        (
            "cross-origin form",
            {
                "url": "/v1/images",
                "files": {"image": ("a.png", png_bytes(32), "image/png")},
                "headers": {"origin": "http://evil.example"},
            },
        ),
        (
            "foreign host",
            {
                "url": "/v1/images",
                "content": png_bytes(32),
                "headers": {"host": "evil.example", "content-type": "image/png"},
            },
        ),
        (
            "nested json",
            {
                "url": tool,
                "content": b'{"image_id":' + b"[" * 100000 + b"]" * 100000 + b"}",
                "headers": {"content-type": "application/json"},
            },
        ),
        ("lying nifti", {"url": "/v1/volumes", "files": {"volume": ("lie.nii.gz", lying_nifti(), "application/gzip")}}),
        (
            "png bomb",
            {"url": "/v1/images", "content": _png_claiming(50000, 50000), "headers": {"content-type": "image/png"}},
        ),
        ("bad labels", {"url": tool, "json": {"image_id": image_id, "points": [[1e308, -1e308]], "labels": [5]}}),
        (
            "unknown image",
            {"url": tool, "json": {"image_id": "../../../etc/passwd", "points": [[0.5, 0.5]], "labels": [1]}},
        ),
    ]


def _png_claiming(width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def run(side: int = 4096, actions: int = 40, overlays: bool = True, serve_args: tuple[str, ...] = ()) -> dict:
    import httpx

    port = free_port()
    exe = Path(sys.executable).parent / "ibisagent"
    cmd = [str(exe), "serve", "--port", str(port), "--workers", "2", *serve_args]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    out: dict = {"deaths": 0, "server_errors": 0, "healthz_failures": 0, "cases": {}}
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            for _ in range(600):
                if server.poll() is not None:
                    raise RuntimeError(f"the server did not start: {server.stderr.read()[-2000:]}")
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            limits = http.get("/healthz").json()
            image_id = http.post("/v1/images", content=png_bytes(64), headers={"content-type": "image/png"}).json()[
                "image_id"
            ]
            for case, kwargs in catalogue(image_id):
                url = kwargs.pop("url")
                status = http.post(url, **kwargs).status_code
                out["cases"][case] = status
                out["server_errors"] += status >= 500
                if server.poll() is not None:
                    out["deaths"] += 1
                    break
                try:
                    out["healthz_failures"] += http.get("/healthz").status_code != 200
                except httpx.TransportError:
                    out["healthz_failures"] += 1
            # the app-session abuse: one person clicking on a large image
            big = http.post("/v1/images", content=png_bytes(side), headers={"content-type": "image/png"}).json()
            shown = ["rle", "overlay"] if overlays else ["rle"]
            sid = http.post("/v1/sessions", json={"image_id": big["image_id"], "outputs": []}).json()["session_id"]
            before = rss_bytes(server.pid)
            peak = before
            for i in range(actions):
                x, y = 0.3 + 0.4 * ((i * 7) % 10) / 10, 0.3 + 0.4 * ((i * 3) % 10) / 10
                r = http.post(
                    f"/v1/sessions/{sid}/act", json={"command": f"{'pn'[i % 3 == 2]} {x:.3f},{y:.3f}", "outputs": shown}
                )
                out["server_errors"] += r.status_code >= 500
                peak = max(peak, rss_bytes(server.pid))
            after = rss_bytes(server.pid)
            memory = http.get("/healthz").json()["memory_bytes"]
        bounds = limits["memory_bounds"]
        bound = bounds["one_session"] + bounds["logits"]  # what one session can make the server hold
        out.update(
            side=side,
            actions=actions,
            rss_before_mib=round(before / MiB, 1),
            rss_after_mib=round(after / MiB, 1),
            rss_growth_mib=round((after - before) / MiB, 1),
            rss_peak_growth_mib=round((peak - before) / MiB, 1),
            session_bytes_mib=round(memory["sessions"] / MiB, 1),
            bound_mib=round(bound / MiB, 1),
            total_bound_mib=round(bounds["total"] / MiB, 1),
        )
        out["ok"] = (
            out["deaths"] == 0
            and out["server_errors"] == 0
            and out["healthz_failures"] == 0
            and (after - before) <= bound
            and all(400 <= s < 500 for s in out["cases"].values())
        )
        return out
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=4096, help="image side for the session abuse, pixels")
    ap.add_argument("--actions", type=int, default=40, help="person clicks in the one session")
    ap.add_argument("--no-overlays", action="store_true", help="ask for RLE only (quicker)")
    args = ap.parse_args()
    result = run(args.side, args.actions, not args.no_overlays)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()

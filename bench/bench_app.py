"""Latency of a correction in the annotator's page (`ibisagent app`), as a person feels it.

    python bench/bench_app.py                    # in-process server, LiteMedSAM on 2 torch threads
    python bench/bench_app.py --clicks 40 --no-browser --json out.json

Phases:
  http-2d     a session's `act` on the 1024 x 1024 demo X-ray, as the page sends it (human policy
              command, RLE back): the server's click -> new mask round trip.
  http-slice  the same on a slice of a synthetic 256 x 256 x 40 CT volume.
  plane       fetching a volume slice's intensities (what wheel scrolling costs before drawing).
  browser-2d  end to end in headless Chromium: mouse click on the canvas -> the page has drawn the
              new mask (status settled); includes RLE decoding and the canvas redraw in JS.
  browser-slice  the same on the CT slice.

Clicks alternate positive (inside a central disc) and negative; a session is reopened every 8
clicks so each click's prompt set stays realistic. Prints n, p50, p95 and max in ms per phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ibisagent" / "assets" / "demo" / "images" / "15_X-Ray_chest.png"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


# resolves once the page has drawn the mask of its n-th answered click (the status line is updated after drawing)
SETTLED = """n => new Promise((resolve) => {
  const s = document.getElementById('status');
  const check = () => {
    if (s.dataset.busy === '0' && (s.dataset.acts === String(n) || s.className === 'error')) { obs.disconnect(); resolve(); }
  };
  const obs = new MutationObserver(check);
  obs.observe(s, {attributes: true, childList: true, characterData: true, subtree: true});
  check();
  setTimeout(() => { obs.disconnect(); resolve("timeout"); }, 30000);
})"""


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def row(name: str, ms: list[float]) -> dict:
    r = {"phase": name, "n": len(ms), "p50_ms": round(pct(ms, 50), 1), "p95_ms": round(pct(ms, 95), 1)}
    r["max_ms"] = round(max(ms), 1) if ms else None
    print(f"{name:14s} n={r['n']:3d}  p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  max {r['max_ms']} ms")
    return r


def synthetic_ct(path: Path, size: int = 256, slices: int = 40) -> Path:
    import nibabel as nib

    x, y, z = np.meshgrid(np.arange(size), np.arange(size), np.arange(slices), indexing="ij")
    c = size / 2
    vol = np.full((size, size, slices), -1000, np.int16)
    vol[((x - c) / (0.45 * size)) ** 2 + ((y - c) / (0.38 * size)) ** 2 <= 1] = 40
    vol[((x - 0.4 * size) / (0.15 * size)) ** 2 + ((y - 0.55 * size) / (0.12 * size)) ** 2 <= 1] = 160
    vol += np.random.default_rng(0).normal(0, 12, vol.shape).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    return path


def clicks_for(W: int, H: int, n: int, rng) -> list[tuple[int, int, int]]:
    out = []
    for i in range(n):
        r, a = 0.25 * min(W, H) * np.sqrt(rng.random()), 2 * np.pi * rng.random()
        out.append((int(W / 2 + r * np.cos(a)), int(H / 2 + r * np.sin(a)), 1 if i % 2 == 0 else 0))
    return out


def http_phase(client, image_id: str, W: int, H: int, n: int, rng) -> list[float]:
    ms, session = [], None
    for i, (x, y, lab) in enumerate(clicks_for(W, H, n, rng)):
        if i % 8 == 0:
            r = client.post("/v1/sessions", json={"image_id": image_id, "outputs": ["rle"]})
            r.raise_for_status()
            session = r.json()["session_id"]
        cmd = f"{'p' if lab else 'n'} {(x + 0.5) / W:.6f},{(y + 0.5) / H:.6f}"
        t0 = time.perf_counter()
        r = client.post(f"/v1/sessions/{session}/act", json={"command": cmd, "outputs": ["rle"]})
        ms.append(1000 * (time.perf_counter() - t0))
        r.raise_for_status()
    return ms


def browser_phase(browser, url: str, upload: Path, n: int, rng, slice_wait: int | None) -> list[float]:
    ms, parts, lost = [], [], []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(url + "/")
    page.set_input_files("#image", str(upload))
    if slice_wait is not None:
        page.wait_for_function(f"() => document.getElementById('view').width === {slice_wait}")
    page.wait_for_function("() => document.getElementById('status').dataset.busy === '0'")
    W, H = page.evaluate("() => [document.getElementById('view').width, document.getElementById('view').height]")
    done = 0  # clicks the page has had answered (data-acts)
    for i, (x, y, lab) in enumerate(clicks_for(W, H, n, rng)):
        if i and i % 8 == 0:
            page.evaluate("() => document.getElementById('reset').click()")  # page.click would scroll the page
            page.wait_for_function("() => document.getElementById('status').dataset.clicks === '0'")
        box = page.locator("#view").bounding_box()
        px = box["x"] + (x + 0.5) * box["width"] / W
        py = box["y"] + (y + 0.5) * box["height"] / H
        t0 = time.perf_counter()
        page.mouse.click(px, py, button="left" if lab else "right")
        done += 1
        late = page.evaluate(SETTLED, done)  # no polling: a MutationObserver on the status line
        if late:  # the page never took the click: count it, click again, leave it out of the figures
            lost.append(i)
            page.mouse.click(px, py, button="left" if lab else "right")
            late = page.evaluate(SETTLED, done)
            t0 = None
        if late or page.locator("#status").get_attribute("class") == "error":
            raise RuntimeError(f"click {i}: {page.locator('#status').inner_text()}")
        if t0 is None:
            continue
        ms.append(1000 * (time.perf_counter() - t0))
        parts.append([int(page.locator("#status").get_attribute(f"data-{k}-ms") or 0) for k in ("request", "draw")])
    print(
        f"  in the page: request p50 {pct([p[0] for p in parts[1:]], 50):.0f} ms,"
        f" decode + draw p50 {pct([p[1] for p in parts[1:]], 50):.0f} ms"
        f" p95 {pct([p[1] for p in parts[1:]], 95):.0f} ms"
    )
    if lost:
        print(f"  clicks the page did not take (clicked again, left out): {lost}")
    first = ms.pop(0)  # a slice's first click also stores and embeds it
    print(
        f"  first click ({'slice embedding included' if slice_wait != 1024 else 'image embedded at upload'}): {first:.0f} ms"
    )
    page.close()
    return ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clicks", type=int, default=32, help="corrections per phase")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the tool (the 2-core target)")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium phases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from ibisagent.app.api import create_app
    from ibisagent.app.background import running_server
    from ibisagent.app.config import ServeConfig

    rng = np.random.default_rng(args.seed)
    config = ServeConfig(threads=args.threads, max_clicks=64)
    app = create_app(config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ct = synthetic_ct(Path(tmp) / "ct256.nii.gz")
        with TestClient(app) as client:
            r = client.post("/v1/images", files={"image": ("xray.png", DEMO.read_bytes(), "image/png")})
            r.raise_for_status()
            info = r.json()
            print(f"embedding of the 1024 x 1024 X-ray: {info['embed_ms']:.0f} ms (once per image)")
            http_phase(client, info["image_id"], info["width"], info["height"], 2, rng)  # warm-up
            rows.append(
                row("http-2d", http_phase(client, info["image_id"], info["width"], info["height"], args.clicks, rng))
            )
            r = client.post(
                "/v1/volumes",
                content=ct.read_bytes(),
                headers={"content-type": "application/gzip", "x-filename": "ct256.nii.gz"},
            )
            r.raise_for_status()
            vid = r.json()["volume_id"]
            plane = []
            for k in range(40):
                t0 = time.perf_counter()
                client.get(f"/v1/annotate/volumes/{vid}/plane", params={"axis": "axial", "index": k}).raise_for_status()
                plane.append(1000 * (time.perf_counter() - t0))
            rows.append(row("plane", plane))
            t0 = time.perf_counter()
            sl = client.post(f"/v1/volumes/{vid}/slice", json={"axis": "axial", "index": 20}).json()
            print(f"slice store + embedding: {1000 * (time.perf_counter() - t0):.0f} ms (once per slice clicked)")
            rows.append(
                row("http-slice", http_phase(client, sl["image_id"], sl["width"], sl["height"], args.clicks, rng))
            )
        if not args.no_browser and CHROMIUM.exists():
            from playwright.sync_api import sync_playwright

            with running_server(create_app(config, tool=app.state.service.tool)) as url, sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
                try:
                    rows.append(row("browser-2d", browser_phase(browser, url, DEMO, args.clicks, rng, 1024)))
                    rows.append(row("browser-slice", browser_phase(browser, url, ct, args.clicks, rng, 256)))
                finally:
                    browser.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

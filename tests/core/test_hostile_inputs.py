"""Hostile files and crashes at the CLI: every case is one line and exit 2 (or a clean resume),
never a traceback, a hang, an allocation the limits forbid, a torn line or a live orphan."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ibisagent.errors import IbisInputError
from ibisagent.io.rle import rle_decode, rle_encode

XRAY = "images/15_X-Ray_chest.png"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


# -- RLE ----------------------------------------------------------------------------------
def test_rle_counts_that_wrap_int64_are_refused():
    """The 110-byte request that killed the server: counts whose int64 sum wraps to H * W."""
    wrap = 2**63 - 1
    for counts in ([wrap, wrap, 6], [2**64 + 4], [2**70], [-1, 5], [True, 3], [1.0, 3]):
        with pytest.raises(IbisInputError):
            rle_decode({"size": [2, 2], "counts": counts})
    with pytest.raises(IbisInputError, match="limit"):
        rle_decode({"size": [2**40, 2**40], "counts": [2**80]})
    with pytest.raises(IbisInputError, match="image is"):
        rle_decode({"size": [2, 2], "counts": [4]}, shape=(3, 3))


@settings(max_examples=300, deadline=None)
@given(
    size=st.one_of(st.lists(st.integers(-3, 2**65), max_size=3), json_values),
    counts=st.one_of(st.lists(st.integers(-(2**64), 2**64), max_size=8), json_values),
)
def test_rle_decode_fuzz_refuses_or_returns_a_mask(size, counts):
    try:
        mask = rle_decode({"size": size, "counts": counts}, max_pixels=10_000)
    except IbisInputError as exc:
        assert "\n" not in str(exc)
        return
    assert mask.dtype == bool and list(mask.shape) == [int(v) for v in size]
    assert rle_encode(mask)["size"] == list(mask.shape)


@settings(max_examples=150, deadline=None)
@given(rle=json_values)
def test_rle_decode_fuzz_any_json(rle):
    try:
        rle_decode(rle, max_pixels=10_000)
    except IbisInputError:
        pass


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"BM"]))
def test_mask_reader_fuzz(tmp_path, data, prefix):
    from ibisagent.io.images import load_mask

    path = tmp_path / "m.png"
    path.write_bytes(prefix + data)
    try:
        mask = load_mask(path)
    except IbisInputError as exc:
        assert "\n" not in str(exc)
    else:
        assert mask.dtype == bool and mask.ndim == 2


def test_server_mask_decoder_fuzz():
    """The REST mask decoder (RLE dicts, base64 strings, bytes) only ever raises ApiError 4xx."""
    from ibisagent.app.codec import decode_mask
    from ibisagent.app.errors import ApiError

    @settings(max_examples=150, deadline=None)
    @given(
        value=st.one_of(json_values.filter(lambda v: isinstance(v, dict)), st.text(max_size=40), st.binary(max_size=80))
    )
    def run(value):
        try:
            decode_mask(value, (8, 8), "mask", 1024)
        except ApiError as exc:
            assert 400 <= exc.status < 500

    run()


# -- images -------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height 8-bit grey, with a tiny IDAT (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path):
    from ibisagent.io.images import load_image

    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(12000, 12000))  # 144 MP: PIL alone refuses only above 160 MP
    t0 = time.perf_counter()
    with pytest.raises(IbisInputError, match="12000 x 12000"):
        load_image(path)
    assert time.perf_counter() - t0 < 1.0  # refused from the header, nothing decoded
    with (tmp_path / "big.npy").open("wb") as fh:  # a sparse 81 MP array: only its header is real
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": (9000, 9000)})
        fh.truncate(fh.tell() + 9000 * 9000)
    with pytest.raises(IbisInputError, match="limit"):
        load_image(tmp_path / "big.npy")


def test_pairs_csv_with_a_byte_order_mark(tmp_path, demo_dir):
    from ibisagent.data.pairs import read_pairs_csv

    text = (demo_dir / "pairs.csv").read_text(encoding="utf-8")
    (tmp_path / "pairs.csv").write_text(
        "\ufeff" + text.replace("images/", f"{demo_dir}/images/").replace("masks/", f"{demo_dir}/masks/"),
        encoding="utf-8",
    )
    assert len(read_pairs_csv(tmp_path / "pairs.csv")) == len(read_pairs_csv(demo_dir / "pairs.csv"))


# -- NIfTI --------------------------------------------------------------------------------
def _nifti(tmp_path, **patch) -> bytes:
    """A valid 4 x 5 x 6 int16 NIfTI-1 file's bytes with header fields patched: atOFFSET=(fmt, value)."""
    nib = pytest.importorskip("nibabel")
    img = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.eye(4))
    img.header.set_sform(np.eye(4), 1)
    nib.save(img, tmp_path / "good.nii")
    data = bytearray((tmp_path / "good.nii").read_bytes())
    for offset, (fmt, value) in patch.items():
        struct.pack_into(fmt, data, int(offset.removeprefix("at")), value)
    return bytes(data)


@pytest.mark.parametrize(
    "case, make, words",
    [
        ("zero dim", lambda p: _nifti(p, at46=("<h", 0)), "size 0"),
        ("truncated", lambda p: _nifti(p)[:400], "truncated"),
        # 59 KB-class gzip claiming 1000 x 1000 x 216 int32 voxels (864 MB)
        (
            "header lies",
            lambda p: gzip.compress(_nifti(p, at42=("<h", 1000), at44=("<h", 1000), at46=("<h", 216))),
            "promises",
        ),
    ],
)
def test_bad_nifti_is_one_line(tmp_path, case, make, words):
    from ibisagent.data.scans import load_volume

    suffix = ".nii.gz" if case == "header lies" else ".nii"
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(make(tmp_path))
    with pytest.raises(IbisInputError, match=words):
        load_volume(path).data.sum()


# -- the CLI ------------------------------------------------------------------------------
def _cli(*args):
    from ibisagent.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_exit_2(result, *words):
    out = result.output.strip()
    assert result.exit_code == 2, (result.exit_code, out)
    last = out.splitlines()[-1]
    assert "Traceback" not in out and last.startswith("error: ") and out.count("error:") == 1, out
    for w in words:
        assert w in last, out


def test_cli_file_system_error_on_out_is_one_line_exit_2(tmp_path, demo_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _cli("click", demo_dir / XRAY, "--pos", "0.3,0.5", "--out", blocker / "sub" / "mask.png")
    _one_line_exit_2(r, str(blocker))


def test_cli_fifo_input_does_not_hang(tmp_path):
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ibisagent"),
            "click",
            str(fifo),
            "--pos",
            "0.5,0.5",
            "--out",
            str(tmp_path / "m.png"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def test_segment_early_error_leaves_no_out_folder(tmp_path, demo_dir):
    out = tmp_path / "never"
    r = _cli("segment", demo_dir / XRAY, "--query", "lung", "--policy", "oracle", "--out", out)
    _one_line_exit_2(r, "reference")
    assert not out.exists()


def test_cli_nifti_errors_are_one_line(tmp_path):
    path = tmp_path / "zero.nii"
    path.write_bytes(_nifti(tmp_path, at46=("<h", 0)))
    _one_line_exit_2(_cli("segment", path, "--query", "liver", "--policy", "centre", "--out", tmp_path / "o"), "size 0")
    (tmp_path / "ok.nii").write_bytes(_nifti(tmp_path))
    r = _cli(
        "segment",
        tmp_path / "ok.nii",
        "-q",
        "liver",
        "--policy",
        "centre",
        "--slices",
        "0:3:0",
        "--out",
        tmp_path / "o",
    )
    _one_line_exit_2(r, "step")
    assert not (tmp_path / "o").exists()


def test_simulate_resume_cuts_a_torn_last_line(tmp_path, demo_dir):
    out = tmp_path / "sim"
    args = ("simulate", demo_dir, "--limit", "2", "--max-clicks", "1", "--no-overlays", "--out", out)
    assert _cli(*args).exit_code == 0
    results = out / "results.jsonl"
    first, second = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(first + second[: len(second) // 2])  # killed while writing the second row
    assert _cli(*args).exit_code == 0
    rows = [json.loads(line) for line in results.read_bytes().splitlines()]  # every line parses
    assert len(rows) == 2 and rows[1]["id"] == json.loads(second)["id"]


def test_pool_workers_die_with_a_killed_parent(tmp_path):
    script = textwrap.dedent(
        """
        import multiprocessing as mp, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from ibisagent.lifetime import die_with_parent
        if __name__ == "__main__":
            pool = ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), initializer=die_with_parent)
            futures = [pool.submit(time.sleep, 120) for _ in range(2)]
            time.sleep(3)
            print(" ".join(str(p) for p in pool._processes), flush=True)
            time.sleep(120)
        """
    )
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False

    deadline = time.time() + 10
    while any(alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers), "pool workers outlived their killed parent"

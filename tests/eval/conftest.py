"""Fixtures of the evaluation tests: a tiny dataset cut from the bundled demo, and one finished run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

SIDE = 160  # pixels: small crops keep the tests fast on CPU
PICK = ["06_CT_abdomen__spleen", "06_CT_abdomen__left_kidney", "24_endoscope_colon__polyp"]


def make_tiny_dataset(root: Path, demo_dir: Path, extra_rows: list[list[str]] | None = None) -> Path:
    """A pairs.csv folder with three demo targets on two images, resized to SIDE x SIDE."""
    import cv2

    from ibisagent.io.images import load_image, load_mask, save_mask_png, save_png

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows = []
    for name in PICK:
        image_name, structure = name.split("__")
        img = load_image(demo_dir / "images" / f"{image_name}.png")
        mask = load_mask(demo_dir / "masks" / f"{name}.png", shape=img.shape[:2])
        save_png(root / "images" / f"{image_name}.png", cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA))
        small = cv2.resize(mask.astype(np.uint8), (SIDE, SIDE), interpolation=cv2.INTER_NEAREST).astype(bool)
        save_mask_png(root / "masks" / f"{name}.png", small)
        rows.append([f"images/{image_name}.png", f"masks/{name}.png", structure.replace("_", " ")])
    with (root / "pairs.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "mask", "structure"])
        w.writerows(rows + (extra_rows or []))
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, demo_dir) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), demo_dir)


POLICIES = ["oracle:0.9", "box", "centre", "random:2"]


def config(data: Path, **kw):
    from ibisagent.eval.harness import RunConfig

    base = dict(data=[str(data)], policies=list(POLICIES), max_steps=6, seed=7, workers=1, threads=1)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_data):
    """A complete run of the four baselines on the tiny dataset (read back as RunData)."""
    from ibisagent.eval.harness import run_eval

    return run_eval(config(tiny_data), tmp_path_factory.mktemp("run") / "r")

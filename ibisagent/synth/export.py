"""Exports of synthesized trajectories for the trainers.

- `chat_rows` / `write_chat_dataset`: our SFT trainer's rows as a `datasets` dataset: one row
  per trajectory, the whole conversation (system, then user/assistant per step) with a `train`
  flag per turn (False for user turns and for deliberately wrong actions), images in order.
- `sharegpt_rows` / `write_sharegpt`: LLaMA-Factory's ShareGPT JSON (what the reference release
  trained with): one row per trained assistant turn, without history by default (the released
  inference keeps none), plus a `dataset_info.json` entry.
- `rl_rows` / `write_rl_parquet`: step-level RL rows (one per expert-prefix state) as Parquet,
  with flat columns the reward functions read (`ibisagent.rewards`) and verl-style fields.
Texts come from the released protocol (`env.protocol`); images from the one overlay renderer.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ibisagent.env.protocol import SYSTEM_PROMPT, format_action, parse_response
from ibisagent.io.images import atomic_write_bytes
from ibisagent.synth.records import Trajectory


def _turns(t: Trajectory, root: Path) -> list[tuple[str, str, bool, str | None]]:
    """(role, content, train, image path or None) for each turn after the system prompt."""
    out = []
    for step, text, img in zip(t.steps, t.obs_texts, t.obs_files):
        out.append(("user", text, False, str(root / img)))
        out.append(("assistant", step.response, step.train, None))
    return out


def chat_rows(trajs: list[Trajectory], root: str | Path) -> list[dict]:
    root = Path(root).resolve()
    rows = []
    for t in trajs:
        turns = _turns(t, root)
        rows.append(
            {
                "id": t.id,
                "kind": t.kind,
                "sample_id": t.sample_id,
                "query": t.query,
                "images": [img for *_, img in turns if img],
                "messages": [{"role": "system", "content": SYSTEM_PROMPT, "train": False}]
                + [{"role": r, "content": c, "train": tr} for r, c, tr, _ in turns],
            }
        )
    return rows


def write_chat_dataset(trajs: list[Trajectory], root: str | Path, dest: str | Path) -> int:
    """Save the chat rows with `datasets` (`save_to_disk`) into `dest`, replacing it atomically."""
    from datasets import Dataset, Features, Image, Sequence, Value

    features = Features(
        {
            "id": Value("string"),
            "kind": Value("string"),
            "sample_id": Value("string"),
            "query": Value("string"),
            "images": Sequence(Image()),
            "messages": [{"role": Value("string"), "content": Value("string"), "train": Value("bool")}],
        }
    )
    rows = chat_rows(trajs, root)
    ds = Dataset.from_list(rows, features=features)
    _replace_dir(dest, lambda tmp: ds.save_to_disk(tmp))
    return len(rows)


def _replace_dir(dest: str | Path, write) -> None:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        write(str(tmp / "d"))
        old = dest.with_name(f".{dest.name}.old")
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp / "d", dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sharegpt_rows(trajs: list[Trajectory], history: bool = False) -> list[dict]:
    """One row per trained assistant turn; image paths relative to the run folder."""
    rows = []
    for t in trajs:
        for k, step in enumerate(t.steps):
            if not step.train:
                continue
            first = 0 if history else k
            convo, images = [], []
            for j in range(first, k + 1):
                convo.append({"from": "human", "value": t.obs_texts[j]})
                convo.append({"from": "gpt", "value": t.steps[j].response})
                images.append(t.obs_files[j])
            rows.append(
                {"id": f"{t.id}#{step.index}", "system": SYSTEM_PROMPT, "conversations": convo, "images": images}
            )
    return rows


DATASET_INFO = {
    "ibisagent_sft": {
        "file_name": "sharegpt.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "images": "images"},
    }
}


def write_sharegpt(trajs: list[Trajectory], root: str | Path, history: bool = False) -> int:
    """`ROOT/sharegpt.json` and `ROOT/dataset_info.json` (use `dataset_dir: ROOT`; with
    `history=True`, also set `mask_history: true` so only each row's last turn is trained)."""
    root = Path(root)
    rows = sharegpt_rows(trajs, history)
    atomic_write_bytes(root / "sharegpt.json", json.dumps(rows, indent=1).encode())
    atomic_write_bytes(root / "dataset_info.json", json.dumps(DATASET_INFO, indent=1).encode())
    return len(rows)


def _action_line(response: str) -> str:
    a = parse_response(response)
    return format_action(a.kind, a.x, a.y) if a.kind != "invalid" else ""


def rl_rows(trajs: list[Trajectory], root: str | Path) -> list[dict]:
    """One row per trained step: the state before it (expert prefix) and what the rewards need.
    `prev_clicks` are the clicks in force ((x, y, label) pixels, since the last discard),
    `prev_mask`/`init_mask` RLE as JSON text ("" for none), `step` the 1-based action index."""
    root = Path(root).resolve()
    rows = []
    for t in trajs:
        clicks: list[list[int]] = []
        init = t.init_mask
        prev_mask = init
        for k, step in enumerate(t.steps):
            if step.train:
                rows.append(
                    {
                        "id": f"{t.id}#{step.index}",
                        "traj_id": t.id,
                        "sample_id": t.sample_id,
                        "kind": t.kind,
                        "step": step.index,
                        "query": t.query,
                        "user_text": t.obs_texts[k],
                        "system": SYSTEM_PROMPT,
                        "obs_path": str(root / t.obs_files[k]),
                        "image_path": str(root / t.image_file),
                        "gt_mask_path": str(root / t.gt_file),
                        "image_size": list(t.image_size),
                        "prev_clicks": [list(c) for c in clicks],
                        "prev_iou": step.prev_iou if step.prev_iou is not None else 0.0,
                        "prev_mask": json.dumps(prev_mask) if prev_mask else "",
                        "init_mask": json.dumps(init) if init else "",
                        "expert_response": step.response,
                        "expert_action": _action_line(step.response),
                        "answer": t.answer,
                        "target_present": t.target_present,
                        "closed": t.kind == "vqa",
                        "data_source": "ibisagent",
                        "ability": "segmentation",
                    }
                )
            if step.kind == "discard":
                clicks, init = [], None
            elif step.click is not None:
                clicks.append(list(step.click))
            if step.mask is not None:
                prev_mask = step.mask
    return rows


def write_parquet(rows: list[dict], dest: str | Path) -> int:
    """Write `rows` as one Parquet table at `dest` (atomically: a temporary file, then a rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, dest)
    return len(rows)


def write_rl_parquet(trajs: list[Trajectory], root: str | Path, dest: str | Path) -> int:
    return write_parquet(rl_rows(trajs, root), dest)


def export_all(root: str | Path, trajs: list[Trajectory], history: bool = False) -> dict:
    """All three exports under ROOT/export/; returns the row counts."""
    root = Path(root)
    exp = root / "export"
    return {
        "chat_rows": write_chat_dataset(trajs, root, exp / "chat"),
        "sharegpt_rows": write_sharegpt(trajs, root, history),
        "rl_rows": write_rl_parquet(trajs, root, exp / "rl.parquet"),
    }

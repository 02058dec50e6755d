"""Our synthesized RL rows (`synth.export.rl_rows`, the cold-start RL Parquet) -> verl's RL Parquet.

verl's `RLHFDataset` reads `prompt` (chat messages whose text holds one `<image>` placeholder per
image), `images` (here [{"bytes": PNG}], so the file is self-contained on a cluster),
`data_source`, `ability`, `reward_model` {"style": "rule", "ground_truth": reference mask path}
and `extra_info` (our row's fields, for `integrations.verl.reward`; `index`; `tools_kwargs`).

- mode "step": one row per trained step (the released recipe): the state's image (the original
  at step 1, else the overlay the expert saw) and its user turn; the single-turn agent loop.
- mode "episode": one row per trajectory start (step 1 rows): the original image (or the overlay
  of a given mask) and the query, `agent_name` "tool_agent"; `IbisClickTool` plays the episode.
Paths in `extra_info` and `ground_truth` are absolute and must be readable where the reward
runs (a shared file system), or use a tool server for the masks' images.

CLI: python -m ibisagent.integrations.verl.data SRC.parquet DEST.parquet [--mode step|episode]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ibisagent.env.protocol import SYSTEM_PROMPT
from ibisagent.integrations.verl import TOOL_NAME
from ibisagent.rewards import ROW_KEYS
from ibisagent.synth.export import write_parquet

MODES = ("step", "episode")


def _png(path: str) -> bytes:
    """The image file as PNG bytes (re-encoded when it is another format)."""
    data = Path(path).read_bytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    from ibisagent.io.images import load_image
    from ibisagent.tools.remote import png_bytes

    return png_bytes(load_image(path))


def verl_row(row: dict, index: int, mode: str = "step", split: str = "train") -> dict:
    """One verl RL row from one of our rows (see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    user = row["user_text"] if "<image>" in row["user_text"] else "<image>" + row["user_text"]
    extra = {k: row.get(k) for k in ROW_KEYS}
    extra.update(
        index=index,
        split=split,
        id=row.get("id"),
        kind=row.get("kind"),
        ibis_mode=mode,
        expert_response=row.get("expert_response"),
    )
    out = {
        "data_source": row.get("data_source") or "ibisagent",
        "prompt": [
            {"role": "system", "content": row.get("system") or SYSTEM_PROMPT},
            {"role": "user", "content": user},
        ],
        "images": [{"bytes": _png(row["obs_path"])}],
        "ability": row.get("ability") or "segmentation",
        "reward_model": {"style": "rule", "ground_truth": row["gt_mask_path"]},
        "extra_info": extra,
    }
    if mode == "episode":
        create = {k: row.get(k) for k in ("image_path", "gt_mask_path", "init_mask", "query", "answer", "closed")}
        extra["tools_kwargs"] = {TOOL_NAME: {"create_kwargs": create}}
        extra["need_tools_kwargs"] = True
        out["agent_name"] = "tool_agent"
    return out


def to_verl_rows(rows: list[dict], mode: str = "step", split: str = "train") -> list[dict]:
    """All rows ("step") or the trajectory starts ("episode": rows with step == 1)."""
    picked = rows if mode == "step" else [r for r in rows if int(r["step"]) == 1]
    return [verl_row(r, i, mode, split) for i, r in enumerate(picked)]


def convert_parquet(src: str | Path, dest: str | Path, mode: str = "step", split: str = "train") -> int:
    """Read our RL Parquet, write verl's (atomically); returns the row count."""
    import pyarrow.parquet as pq

    rows = to_verl_rows(pq.read_table(src).to_pylist(), mode, split)
    if not rows:
        raise ValueError(f"{src}: no rows to convert (mode {mode})")
    return write_parquet(rows, dest)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Convert ibisagent RL rows (synth export/rl.parquet) to verl's format.")
    ap.add_argument("src", help="our RL Parquet (ibisagent synth ... -> export/rl.parquet)")
    ap.add_argument("dest", help="verl RL Parquet to write")
    ap.add_argument("--mode", choices=MODES, default="step", help="step-level rows or episode starts")
    ap.add_argument("--split", default="train")
    args = ap.parse_args(argv)
    n = convert_parquet(args.src, args.dest, args.mode, args.split)
    print(f"{args.dest}: {n} rows ({args.mode})")


if __name__ == "__main__":
    main()

"""The three exports: chat dataset with per-turn train flags, ShareGPT, RL Parquet."""

import json

from ibisagent.env.protocol import SYSTEM_PROMPT, parse_response
from ibisagent.synth.export import export_all


def test_exports(synth_run):
    out, _, trajs = synth_run
    counts = export_all(out, trajs)
    trained = sum(s.train for t in trajs for s in t.steps)
    assert counts == {"chat_rows": len(trajs), "sharegpt_rows": trained, "rl_rows": trained}

    import datasets

    ds = datasets.load_from_disk(str(out / "export" / "chat"))
    row = ds[[i for i, k in enumerate(ds["kind"]) if k == "self_correction"][0]]
    msgs = row["messages"]
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT, "train": False}
    assert not any(m["train"] for m in msgs if m["role"] == "user")
    flags = [m["train"] for m in msgs if m["role"] == "assistant"]
    assert False in flags and flags.count(False) == 1
    assert len(row["images"]) == sum(m["content"].count("<image>") for m in msgs)
    assert row["images"][0].size[0] > 0  # a PIL image

    sg = json.loads((out / "sharegpt.json").read_text())
    assert json.loads((out / "dataset_info.json").read_text())["ibisagent_sft"]["formatting"] == "sharegpt"
    for r in sg:
        assert sum(c["value"].count("<image>") for c in r["conversations"]) == len(r["images"])
        assert all((out / p).is_file() for p in r["images"])
        assert parse_response(r["conversations"][-1]["value"]).kind != "invalid"

    import pyarrow.parquet as pq

    rows = pq.read_table(out / "export" / "rl.parquet").to_pylist()
    by_traj = {}
    for r in rows:
        by_traj.setdefault(r["traj_id"], []).append(r)
    for t in trajs:
        mine = by_traj[t.id]
        assert [r["step"] for r in mine] == [s.index for s in t.steps if s.train]
        first = mine[0]
        assert first["prev_clicks"] == [] and first["step"] == 1
        assert first["user_text"] == t.obs_texts[0]

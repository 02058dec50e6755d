"""The Ray backend: the same shards, the same trajectories and the same resume as the process pool."""

import sys

import pytest
from typer.testing import CliRunner

from ibisagent.errors import IbisInputError
from ibisagent.synth.job import run_synth, shard_path


def _small(make_config, data, **kw):
    cfg = make_config(data, limit=2, **kw)
    cfg.mix = {"segment": 1.0, "self_correction": 1.0, "vqa": 1.0, "negative": 1.0}
    cfg.shard_size = 2
    return cfg


def test_ray_missing_is_one_clear_error(tiny_data, tmp_path, make_config, monkeypatch):
    from ibisagent.cli.main import app

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(IbisInputError, match=r"Ray is not installed \(pip install 'ibisagent\[ray\]'\)"):
        run_synth(_small(make_config, tiny_data, workers=2, backend="ray"), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any work
    res = CliRunner().invoke(app, ["synth", str(tiny_data), "--out", str(tmp_path / "o"), "--backend", "ray"])
    assert res.exit_code == 2 and "Ray is not installed" in res.output
    with pytest.raises(IbisInputError, match="unknown backend"):
        run_synth(_small(make_config, tiny_data, backend="dask"), tmp_path / "out")


@pytest.fixture
def local_ray():
    """A local Ray with 2 CPUs that run_synth joins (it starts and stops its own when none is up).
    Ray's agents can miss their start-up deadline on an overloaded 2-core machine: then skip."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # "The current node timed out during startup ..."
        ray.shutdown()
        pytest.skip(f"Ray did not start here: {exc}")
    yield ray
    ray.shutdown()


def test_ray_and_processes_make_the_same_trajectories_and_resume(tiny_data, tmp_path, make_config, local_ray):
    run_synth(_small(make_config, tiny_data, workers=1), tmp_path / "proc")
    s = run_synth(_small(make_config, tiny_data, workers=2, backend="ray"), tmp_path / "ray")
    expected = (tmp_path / "proc" / "trajectories.jsonl").read_text()
    assert expected and (tmp_path / "ray" / "trajectories.jsonl").read_text() == expected
    assert s["trajectories"] == expected.count("\n") and s["time_share"]["decoder"] > 0
    assert (tmp_path / "ray" / "skipped.jsonl").read_text() == (tmp_path / "proc" / "skipped.jsonl").read_text()
    # a kill mid-run: one shard missing, a torn temp file; Ray resumes the process pool's run
    shard_path(tmp_path / "proc", 1).unlink()
    (tmp_path / "proc" / "shards" / ".00001.jsonl.x.tmp").write_text('{"status": "ok", "traj')
    again = run_synth(_small(make_config, tiny_data, workers=2, backend="ray"), tmp_path / "proc")
    assert (tmp_path / "proc" / "trajectories.jsonl").read_text() == expected
    assert again["trajectories"] == s["trajectories"]
    assert sorted(p.name for p in (tmp_path / "proc" / "shards").iterdir()) == sorted(
        p.name for p in (tmp_path / "ray" / "shards").iterdir()
    )

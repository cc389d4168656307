"""bench sweep: cells as idempotent tasks on local processes and a real local Ray cluster; results identical to
`bench run`; a killed worker leaves its cell retried or failed, never half-written; stored cells are skipped.

Uses a tiny two-dataset suite (tests/conftest.py's write_tiny_suite, twice): synth4 builds take minutes on 2 cores."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.errors import BenchError
from mmsr_bench.results.store import Store
from mmsr_bench.runner import sweep
from mmsr_bench.suites import build
from mmsr_bench.suites import spec as suites
from tests.conftest import write_tiny_suite

MODELS = ["random", "pop"]
SEEDS = [0, 1]


@pytest.fixture
def two_sets(tmp_path, monkeypatch):
    path = write_tiny_suite(tmp_path)
    other = write_tiny_suite(tmp_path / "b", seed=1)
    shutil.copy(other.parent / "data" / "tiny.txt", tmp_path / "data" / "tiny2.txt")
    path.write_text(path.read_text() + '\n[[datasets]]\nname = "seq2"\nsource = "sequence"\npath = "tiny2.txt"\n'
                                       'items = "tiny_items.tsv"\n')
    monkeypatch.setenv("MMSR_BENCH_DATA", str(tmp_path / "data"))
    spec = suites.load_suite(str(path))
    for name in ("seq", "seq2"):
        suites.write_hashes(spec, name, build.materialize(spec, spec.dataset(name)))
        spec = suites.load_suite(str(path))
    return path


def _req(path, db, **kw):
    return sweep.SweepRequest(str(path), kw.pop("models", MODELS), None, kw.pop("seeds", SEEDS), {}, db,
                              workers=2, **kw)


def _cells(db):
    return {(r.model, r.dataset, r.seed): r for r in Store(db).runs()}


def _metrics(db):
    store = Store(db)
    return {k: (r.metrics_json, {m: v.tobytes() for m, v in store.per_user(r.id).items()})
            for k, r in _cells(db).items()}


def _bench_run_reference(path, tmp_path) -> dict:
    ref = f"sqlite:///{tmp_path / 'ref.db'}"
    res = CliRunner().invoke(app, ["run", "--suite", str(path), "--model", ",".join(MODELS), "--db", ref,
                                   "--seed", "0", "--seed", "1"])
    assert res.exit_code == 0, res.output
    return _metrics(ref)


def test_local_sweep_matches_bench_run_to_the_last_digit(two_sets, tmp_path, store_url):
    states = sweep.sweep(_req(two_sets, store_url))
    assert sorted(s.status for s in states) == ["done"] * 8
    got = _metrics(store_url)
    assert len(got) == 8 and got == _bench_run_reference(two_sets, tmp_path)


def test_ray_sweep_matches_bench_run_to_the_last_digit(two_sets, tmp_path, request):
    ray = pytest.importorskip("ray", reason="Ray 2.6.3 needs pkg_resources (setuptools<81)", exc_type=ImportError)
    try:
        db = request.getfixturevalue("postgres_url")
    except pytest.skip.Exception:
        db = f"sqlite:///{tmp_path / 'ray.db'}"
    Store(db)  # tables exist before the workers race to create them
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("MMSR_BENCH_HOME", "MMSR_BENCH_DATA")}})
    try:
        req = _req(two_sets, db, executor="ray")
        states = sweep.sweep(req)
        assert sorted(s.status for s in states) == ["done"] * 8
        got = {k: v for k, v in _metrics(db).items() if k[1] in ("seq", "seq2")}
        assert got == _bench_run_reference(two_sets, tmp_path)
        assert all(s.status == "skipped" for s in sweep.sweep(req))  # rerun: nothing to do
        # a Ray worker killed mid-cell: the cell is retried and stored once, complete
        db2 = f"sqlite:///{tmp_path / 'raykill.db'}"
        Store(db2)
        states = sweep.sweep(_req(two_sets, db2, executor="ray", retries=2),
                             executor=sweep.RayExecutor(task=crash_first_attempt))
        by = {s.cell.key: s for s in states}
        assert by["pop/seq/seed0"].attempts == 2 and by["pop/seq/seed0"].status == "done"
        assert "WorkerCrashed" in by["pop/seq/seed0"].error or by["pop/seq/seed0"].error
        runs = Store(db2).runs(status=None)
        assert len(runs) == 8 and {r.status for r in runs} == {"completed"}
    finally:
        ray.shutdown()


def crash_first_attempt(cell, db_url, group_id):
    """A worker task that SIGKILLs its own process the first time it sees the pop/seq/seed 0 cell."""
    marker = Path(os.environ["MMSR_BENCH_HOME"]) / f"crashed-{cell.key.replace('/', '_')}"
    if cell.key == "pop/seq/seed0" and not marker.exists():
        marker.write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
    return sweep.run_cell(cell, db_url, group_id)


def crash_always(cell, db_url, group_id):
    if cell.key == "pop/seq/seed0":
        os.kill(os.getpid(), signal.SIGKILL)
    return sweep.run_cell(cell, db_url, group_id)


def test_killed_worker_is_retried_and_never_half_written(two_sets, tmp_path):
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    req = _req(two_sets, db, retries=2)
    states = sweep.sweep(req, executor=sweep.LocalExecutor(2, crash_first_attempt))
    by = {s.cell.key: s for s in states}
    assert by["pop/seq/seed0"].attempts >= 2 and by["pop/seq/seed0"].status in ("done", "skipped")
    runs = Store(db).runs(status=None)
    assert len(runs) == 8 and {r.status for r in runs} == {"completed"}  # no duplicates, no partial rows
    assert all(len(Store(db).per_user(r.id)) == len(r.metrics) for r in runs)


def test_worker_killed_every_time_is_recorded_failed_and_a_rerun_completes_only_it(two_sets, tmp_path):
    db = f"sqlite:///{tmp_path / 'fail.db'}"
    req = _req(two_sets, db, retries=1)
    # one worker: a dead process breaks the whole pool, so with two the bystander cell would use up retries too
    states = sweep.sweep(req, executor=sweep.LocalExecutor(1, crash_always))
    failed = [s for s in states if s.status == "failed"]
    assert [s.cell.key for s in failed] == ["pop/seq/seed0"] and failed[0].attempts == 2
    assert "BrokenProcessPool" in failed[0].error or "terminated" in failed[0].error
    store = Store(db)
    bad = store.runs(status="failed")
    assert len(bad) == 1 and bad[0].metrics == {} and bad[0].error
    with pytest.raises(BenchError, match="no per-user"):
        store.per_user(bad[0].id)
    before = {r.id for r in store.runs()}
    again = sweep.sweep(req)
    assert [s.cell.key for s in again if s.status == "done"] == ["pop/seq/seed0"]
    assert sum(s.status == "skipped" for s in again) == 7
    assert len(store.runs()) == 8 and before < {r.id for r in store.runs()}


def test_stored_cells_are_skipped_without_starting_workers(two_sets, tmp_path):
    db = f"sqlite:///{tmp_path / 'skip.db'}"
    first = sweep.sweep(_req(two_sets, db, models=["random"]))
    assert all(s.status == "done" for s in first)

    class NoWork:
        def submit(self, *a):
            raise AssertionError("a stored cell was scheduled")

    again = sweep.sweep(_req(two_sets, db, models=["random"]), executor=NoWork())
    assert [s.status for s in again] == ["skipped"] * 4
    assert {s.run_id for s in again} == {s.run_id for s in first}
    res = CliRunner().invoke(app, ["sweep", "--suite", str(two_sets), "--model", "random", "--seed", "0",
                                   "--seed", "1", "--db", db])
    assert res.exit_code == 0 and "0 done, 4 skipped, 0 failed" in res.output, res.output


@pytest.mark.parametrize("args, needle", [
    (["--model", "nosuch"], "nosuch"),
    (["--model", "pop", "--executor", "slurm"], "--executor"),
    (["--model", "pop", "--workers", "0"], "--workers"),
    (["--model", "pop", "--retries", "-1"], "--retries"),
    (["--model", "pop", "--address", "auto"], "--address"),
    (["--model", "pop", "--set", "nonsense"], "nonsense"),
    (["--model", "pop", "--seed", "-3"], "--seed"),
])
def test_bad_input_fails_before_any_work_and_writes_nothing(two_sets, tmp_path, args, needle):
    db = tmp_path / "bad.db"
    res = CliRunner().invoke(app, ["sweep", "--suite", str(two_sets), "--db", f"sqlite:///{db}", *args])
    assert res.exit_code != 0 and needle in res.output, res.output
    assert not db.exists()


def test_ray_that_cannot_be_imported_is_refused_before_any_store(two_sets, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ModuleNotFoundError("No module named 'pkg_resources'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    db = tmp_path / "noray.db"
    res = CliRunner().invoke(app, ["sweep", "--suite", str(two_sets), "--model", "pop", "--executor", "ray",
                                   "--db", f"sqlite:///{db}"])
    assert res.exit_code == 1 and "--executor ray" in res.output and "pkg_resources" in res.output, res.output
    assert not db.exists()


def test_worker_with_different_artifacts_refuses_the_cell(two_sets, tmp_path):
    cell = sweep.plan(_req(two_sets, None, models=["pop"], seeds=[0]))[0]
    forged = sweep.Cell(**{**cell.__dict__, "fingerprint": "0" * 64})
    with pytest.raises(BenchError, match="refusing the cell"):
        sweep.run_cell(forged, f"sqlite:///{tmp_path / 'x.db'}", "g")


def test_ctrl_c_stops_scheduling_and_records_in_flight_cells_interrupted(two_sets, tmp_path):
    db = f"sqlite:///{tmp_path / 'int.db'}"

    def interrupt(states):
        if any(s.status == "running" for s in states):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.sweep(_req(two_sets, db), on_update=interrupt)
    runs = Store(db).runs(status=None)
    interrupted = [r for r in runs if r.status == "interrupted"]
    assert len(interrupted) == 2 and all(r.metrics == {} for r in interrupted)  # the two cells in flight
    assert len(runs) < 8  # scheduling stopped
    again = sweep.sweep(_req(two_sets, db))  # a rerun completes the sweep
    assert len(Store(db).runs()) == 8 and not any(s.status == "failed" for s in again)

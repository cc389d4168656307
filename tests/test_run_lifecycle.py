"""A run proves it can write before any work, waits a stated time for a lock, never writes into a damaged store, and
never loses a finished result: when the store refuses it at the end, the run is kept as a portable run file and one
line says how to import it."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.results.store import Store


def _run(suite, db, *extra):
    return CliRunner().invoke(app, ["run", "--suite", str(suite), "--model", "pop", "--db", db, *extra])


def _fitted(monkeypatch) -> list:
    """Record every fit, to show that a refused store stops the run before any work."""
    from mmsr_bench.models import baselines

    calls = []
    real = baselines.PopAdapter.fit

    def fit(self, train, valid):
        calls.append(1)
        return real(self, train, valid)

    monkeypatch.setattr(baselines.PopAdapter, "fit", fit)
    return calls


def test_a_read_only_uri_or_shared_memory_store_fails_before_the_fit(frozen_tiny, tmp_path, monkeypatch):
    db = tmp_path / "ro.db"
    assert _run(frozen_tiny, f"sqlite:///{db}").exit_code == 0
    calls = _fitted(monkeypatch)
    res = _run(frozen_tiny, f"sqlite:///file:{db}?mode=ro&uri=true")
    assert res.exit_code == 1 and "cannot write to the results store" in res.output, res.output
    assert "readonly" in res.output and calls == [] and "Traceback" not in res.output
    res = _run(frozen_tiny, "sqlite:///file::memory:?cache=shared&uri=true")
    assert res.exit_code == 1 and "in-memory SQLite database" in res.output, res.output


def test_a_store_locked_longer_than_the_timeout_fails_before_the_fit(frozen_tiny, tmp_path, monkeypatch):
    db = tmp_path / "locked.db"
    assert _run(frozen_tiny, f"sqlite:///{db}").exit_code == 0
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        monkeypatch.setenv("MMSR_BENCH_DB_LOCK_TIMEOUT", "0.2")
        calls = _fitted(monkeypatch)
        res = _run(frozen_tiny, f"sqlite:///{db}")
        assert res.exit_code == 1 and "locked" in res.output and "MMSR_BENCH_DB_LOCK_TIMEOUT" in res.output, res.output
        assert calls == []
    finally:
        holder.rollback()
        holder.close()
    monkeypatch.setenv("MMSR_BENCH_DB_LOCK_TIMEOUT", "soon")
    res = _run(frozen_tiny, f"sqlite:///{db}")
    assert res.exit_code == 1 and "is not a number of seconds" in res.output


def test_a_finished_run_the_store_refuses_is_kept_and_importable(frozen_tiny, tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'gone.db'}"
    real = Store.add_run

    def refuse(self, run, per_user=None, artifacts=None):
        if run.status == "completed":
            raise OperationalError("INSERT INTO runs ...", {}, sqlite3.OperationalError("database or disk is full"))
        return real(self, run, per_user, artifacts)

    monkeypatch.setattr(Store, "add_run", refuse)
    res = _run(frozen_tiny, db)
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert "could not be stored" in text and "database or disk is full" in text and "bench store import" in text
    assert "INSERT INTO" not in text and "Traceback" not in text
    kept = sorted((tmp_path.parent).glob("**/unsaved-runs/**/*.json"))
    from mmsr_bench.paths import bench_home

    kept = sorted(bench_home().glob("unsaved-runs/**/*.json"))
    assert len(kept) == 1 and str(kept[0]) in text
    monkeypatch.setattr(Store, "add_run", real)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    res = CliRunner().invoke(app, ["store", "import", str(kept[0]), "--db", other])
    assert res.exit_code == 0 and "imported 1 runs" in res.output, res.output
    (run,) = Store(other).runs()
    assert run.model == "pop" and run.metrics["ndcg@10"] > 0 and len(Store(other).per_user(run.id)["auc"]) == run.n_users


def _damage(path) -> None:
    """Overwrite 32 bytes in four pages after the first (SQLite's pages are 4096 bytes)."""
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    assert pages >= 3, pages
    for k in range(1, min(5, pages)):
        data[k * 4096 + 8: k * 4096 + 40] = bytes(range(200, 232))
    path.write_bytes(bytes(data))


def test_a_damaged_store_is_refused_for_writing_and_named_by_store_check(frozen_tiny, tmp_path, monkeypatch):
    path = tmp_path / "damaged.db"
    url = f"sqlite:///{path}"
    for seed in range(3):
        assert _run(frozen_tiny, url, "--seed", str(seed)).exit_code == 0
    cli = CliRunner()
    res = cli.invoke(app, ["store", "check", "--db", url])
    assert res.exit_code == 0 and "no damage found (3 runs)" in res.output, res.output
    _damage(path)
    before = path.read_bytes()
    calls = _fitted(monkeypatch)
    res = _run(frozen_tiny, url, "--seed", "7")
    assert res.exit_code == 1 and ("damaged" in res.output or "malformed" in res.output), res.output
    assert calls == [] and path.read_bytes() == before and "Traceback" not in res.output
    res = cli.invoke(app, ["store", "check", "--db", url])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output, res.output


@pytest.mark.parametrize("field,value,message", [("metrics_json", "{not json", "field metrics_json is not valid JSON"),
                                                 ("started_at", "yesterday-ish", "is not a time")])
def test_store_check_names_tampered_fields(frozen_tiny, tmp_path, field, value, message):
    path = tmp_path / "t.db"
    assert _run(frozen_tiny, f"sqlite:///{path}").exit_code == 0
    con = sqlite3.connect(path)
    con.execute(f"UPDATE runs SET {field} = ?", (value,))
    con.execute("UPDATE user_metrics SET \"values\" = x'00' WHERE metric = 'auc'")
    con.commit()
    con.close()
    res = CliRunner().invoke(app, ["store", "check", "--db", f"sqlite:///{path}"])
    assert res.exit_code == 1 and message in res.output and "vector 'auc' cannot be decoded" in res.output, res.output

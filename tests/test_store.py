"""The results store, on SQLite and on PostgreSQL (``store_url``): schema, round trip of per-user vectors, one
transaction per run, read-only opening, concurrent writers, clear errors, and upgrading a store without uuids."""

from __future__ import annotations

import re
import shutil
import socket
from datetime import datetime, timezone

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlmodel import select

from mmsr_bench.errors import BenchError
from mmsr_bench.results.store import Artifact, Run, Store, UserMetric, check_store


def _run(**kw) -> Run:
    base = dict(group_id="g", suite="s", suite_hash="h", dataset="d", model="m", metrics_json='{"auc": 0.5}')
    base.update(kw)
    return Run(**base)


def test_schema_is_created_with_uuid_columns_and_reopening_changes_nothing(store_url):
    Store(store_url)
    Store(store_url).add_run(_run())
    Store(store_url)  # the tables exist: created once, nothing lost
    engine = create_engine(store_url)
    insp = inspect(engine)
    assert {"runs", "user_metrics", "artifacts"} <= set(insp.get_table_names())
    for table in ("runs", "artifacts"):
        assert "uuid" in {c["name"] for c in insp.get_columns(table)}
        assert any(ix["column_names"] == ["uuid"] and ix["unique"] for ix in insp.get_indexes(table))
    engine.dispose()
    assert len(Store(store_url).runs()) == 1


def test_round_trip_per_user_vectors(store_url):
    store = Store(store_url)
    vecs = {"auc": np.random.default_rng(0).random(1000), "hr@10": np.zeros(1000)}
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    run = store.add_run(_run(started_at=started), vecs)
    back = store.per_user(run.id)
    assert set(back) == {"auc", "hr@10"}
    np.testing.assert_array_equal(back["auc"], vecs["auc"])
    again = Store(store_url, read_only=True).run(run.id)
    assert again.metrics == {"auc": 0.5}
    assert re.fullmatch(r"[0-9a-f]{32}", again.uuid) and again.uuid == run.uuid
    # stored as UTC wall time whatever the database server's time zone (the test server's is not UTC)
    assert again.started_at.replace(tzinfo=None) == started.replace(tzinfo=None)
    assert [r.id for r in store.runs(suite="s")] == [run.id]


def test_failed_insert_leaves_nothing(store_url):
    store = Store(store_url)

    class Boom(dict):
        def items(self):
            yield "auc", np.zeros(3)
            raise RuntimeError("interrupted mid-write")

    with pytest.raises(RuntimeError):
        store.add_run(_run(), Boom(), [Artifact(suite="s", dataset="d", model="m", kind="k")])
    assert store.runs(status=None) == []
    with store.session() as s:
        assert list(s.exec(select(UserMetric))) == []
        assert list(s.exec(select(Artifact))) == []


def test_dashboard_opens_the_store_read_only(store_url):
    """The dashboard's store refuses writes: the Store guard, and below it the database itself (SQLite mode=ro,
    PostgreSQL read-only transactions)."""
    from mmsr_bench.dashboard import queries as q

    Store(store_url).add_run(_run())
    ro = q.open_store(store_url)
    assert [r.model for r in ro.runs()] == ["m"] and q.store_state(store_url) == "ready"
    with pytest.raises(BenchError, match="read-only"):
        ro.add_run(_run(model="sneaky"))
    with ro.session() as s:
        with pytest.raises(Exception, match="(?i)read-only|readonly"):
            s.exec(text("UPDATE runs SET model = 'sneaky'"))
            s.commit()
    assert [r.model for r in Store(store_url).runs()] == ["m"]


def test_bad_url_and_missing_run(tmp_path):
    with pytest.raises(BenchError, match="not a valid SQLAlchemy URL"):
        Store("nonsense://")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(BenchError, match="no run with id 42"):
        store.run(42)


def test_read_only_store_on_missing_file_is_empty(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)
    assert store.runs() == [] and store.last_change() == "empty"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_postgres_is_one_error_with_the_password_masked():
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://bob:s3cret@127.0.0.1:{_free_port()}/results"
    for open_ in (Store, Store.for_reading, check_store):
        with pytest.raises(BenchError, match="cannot open the results store") as info:
            open_(url)
        msg = str(info.value)
        assert "bob:***@127.0.0.1" in msg and "s3cret" not in msg and "\n" not in msg


def test_missing_postgres_driver_is_one_error_with_the_password_masked():
    import importlib.util

    if importlib.util.find_spec("pg8000") is not None:
        pytest.skip("pg8000 is installed here")
    with pytest.raises(BenchError, match="driver is not installed") as info:
        Store("postgresql+pg8000://bob:s3cret@db.example/results")
    assert "bob:***@db.example" in str(info.value) and "s3cret" not in str(info.value)


def _drop_uuids(url: str) -> None:
    """Turn a store into one written before uuids existed."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ("runs", "artifacts"):
            conn.execute(text(f"DROP INDEX IF EXISTS ix_{table}_uuid"))
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN uuid"))
    engine.dispose()


def test_a_store_without_uuids_is_upgraded_by_a_writing_open(store_url):
    store = Store(store_url)
    for seed in range(3):
        store.add_run(_run(seed=seed), {"auc": np.full(4, seed / 4)},
                      [Artifact(suite="s", dataset="d", model="m", kind="k")])
    _drop_uuids(store_url)
    with pytest.raises(BenchError, match="predates run uuids.*bench store upgrade"):
        Store(store_url, read_only=True)
    check_store(store_url)  # a `bench run` on it may start: its writing open upgrades it
    runs = Store(store_url).runs(status=None)
    uuids = [r.uuid for r in runs]
    assert len(set(uuids)) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", u) for u in uuids)
    assert len({a.uuid for a in Store(store_url).artifacts()}) == 3
    reopened = Store(store_url, read_only=True)
    assert [r.uuid for r in reopened.runs(status=None)] == uuids  # upgraded once, for good
    assert reopened.per_user(runs[2].id)["auc"].tolist() == [0.5] * 4
    Store(store_url).add_run(_run(seed=9))  # the unique index is in place and new runs get fresh uuids
    assert len({r.uuid for r in Store(store_url).runs()}) == 4


def test_two_copies_of_an_old_store_upgrade_to_the_same_uuids(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    store = Store(f"sqlite:///{a}")
    for seed in range(3):
        store.add_run(_run(seed=seed))
    _drop_uuids(f"sqlite:///{a}")
    shutil.copy(a, b)
    ua = [r.uuid for r in Store(f"sqlite:///{a}").runs()]
    ub = [r.uuid for r in Store(f"sqlite:///{b}").runs()]
    assert ua == ub and len(set(ua)) == 3


def _writer(url: str, worker: int, n: int, barrier) -> None:
    barrier.wait()  # every process opens the brand-new store at the same moment
    store = Store(url)
    for k in range(n):
        store.add_run(_run(model=f"w{worker}", seed=k), {"auc": np.full(10, 0.5)})


def test_concurrent_writers_opening_a_new_store_lose_no_run(store_url):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_writer, args=(store_url, w, 5, barrier)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    store = Store(store_url)
    runs = store.runs()
    assert len(runs) == 40 and len({(r.model, r.seed) for r in runs}) == 40
    with store.session() as s:
        assert len(list(s.exec(select(UserMetric)))) == 40


def test_postgres_schema_creation_waits_for_the_schema_lock(new_postgres_url):
    """Processes opening a new PostgreSQL store create its tables one at a time, under an advisory lock."""
    import threading

    import psycopg

    from mmsr_bench.results.store import SCHEMA_LOCK_KEY
    from tests.pg_server import _libpq

    url = new_postgres_url()
    with psycopg.connect(_libpq(url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        opened: list[Store] = []
        t = threading.Thread(target=lambda: opened.append(Store(url)))
        t.start()
        waiting = False
        for _ in range(600):  # until the opener is seen queued on the lock (a condition, not a time limit)
            waiting = holder.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                                     "AND objid = %s", (SCHEMA_LOCK_KEY,)).fetchone()[0] == 1
            if waiting or not t.is_alive():
                break
            t.join(0.05)
        assert waiting and not opened
        assert holder.execute("SELECT to_regclass('runs')").fetchone()[0] is None
        holder.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
        t.join()
    assert len(opened) == 1 and opened[0].runs() == []


def test_bench_commands_end_to_end_on_a_postgres_store(frozen_tiny, new_postgres_url):
    """`bench run` writes a shared PostgreSQL store; the read-only commands read it back (through read-only
    transactions); `--resume` finds the stored cells there."""
    from typer.testing import CliRunner

    from mmsr_bench.cli.main import app

    url = new_postgres_url()
    cli = CliRunner()
    res = cli.invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor", "--seed", "0",
                           "--seed", "1", "--db", url])
    assert res.exit_code == 0, res.output
    runs = Store(url, read_only=True).runs()
    assert [r.seed for r in runs] == [0, 1] and runs[0].metrics["hr@10"] > 0.5
    assert len(Store(url, read_only=True).per_user(runs[0].id)["ndcg@10"]) == 120
    res = cli.invoke(app, ["runs", "list", "--db", url])
    assert res.exit_code == 0 and "test-successor" in res.output, res.output
    res = cli.invoke(app, ["leaderboard", "--suite", "tiny", "--format", "csv", "--db", url])
    assert res.exit_code == 0 and "test-successor" in res.output, res.output
    res = cli.invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor", "--seed", "0",
                           "--resume", "--db", url])
    assert res.exit_code == 0 and len(Store(url).runs()) == 2, res.output

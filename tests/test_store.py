"""The results store: round trip of per-user vectors, one transaction per run."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import BenchError
from harness.store import Run, Store, UserMetric


def _run(**kw) -> Run:
    base = dict(group_id="g", suite="s", suite_hash="h", dataset="d", model="m", metrics_json='{"auc": 0.5}')
    base.update(kw)
    return Run(**base)


def test_round_trip_per_user_vectors(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    vecs = {"auc": np.random.default_rng(0).random(1000), "hr@10": np.zeros(1000)}
    run = store.add_run(_run(), vecs)
    back = store.per_user(run.id)
    assert set(back) == {"auc", "hr@10"}
    np.testing.assert_array_equal(back["auc"], vecs["auc"])
    assert store.run(run.id).metrics == {"auc": 0.5}
    assert [r.id for r in store.runs(suite="s")] == [run.id]


def test_failed_insert_leaves_nothing(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")

    class Boom(dict):
        def items(self):
            yield "auc", np.zeros(3)
            raise RuntimeError("interrupted mid-write")

    with pytest.raises(RuntimeError):
        store.add_run(_run(), Boom())
    assert store.runs(status=None) == []
    with store.session() as s:
        from sqlmodel import select

        assert list(s.exec(select(UserMetric))) == []


def test_bad_url_and_missing_run(tmp_path):
    with pytest.raises(BenchError, match="not a valid SQLAlchemy URL"):
        Store("nonsense://")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(BenchError, match="no run with id 42"):
        store.run(42)


def test_read_only_store_on_missing_file_is_empty(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)
    assert store.runs() == [] and store.last_change() == "empty"


def _writer(url: str, worker: int, n: int, barrier) -> None:
    barrier.wait()  # every process opens the brand-new store at the same moment
    store = Store(url)
    for k in range(n):
        store.add_run(_run(model=f"w{worker}", seed=k), {"auc": np.full(10, 0.5)})


def test_concurrent_writers_opening_a_new_store_lose_no_run(tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'new.db'}"
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_writer, args=(url, w, 5, barrier)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8
    runs = Store(url).runs()
    assert len(runs) == 40 and len({(r.model, r.seed) for r in runs}) == 40

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

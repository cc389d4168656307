"""`bench store copy`: runs move between stores with their per-user vectors and artifacts, without duplicates, one
transaction per run, both URLs checked before any work; destinations on SQLite and PostgreSQL (``store_url``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlmodel import select
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.errors import BenchError
from mmsr_bench.results import run_files, store_copy
from mmsr_bench.results.store import Artifact, Run, Store, UserMetric
from mmsr_bench.results.store_copy import cell, copy_store


def _fill(url: str, tag: str, n: int = 3) -> Store:
    """n runs (the last one failed), each with two per-user vectors and an attached artifact, plus one artifact
    attached to no run."""
    store = Store(url)
    for k in range(n):
        run = Run(group_id=tag, suite="s", suite_hash="h", dataset=f"d{k % 2}", model=f"m-{tag}", seed=k,
                  status="failed" if k == n - 1 else "completed", metrics_json=f'{{"auc": {k / 10}}}')
        store.add_run(run, {"auc": np.full(5, k / 10), "hr@10": np.arange(5.0) + k},
                      [Artifact(suite="s", dataset=run.dataset, model=run.model, kind="note",
                                payload_json=f'{{"k": {k}}}')])
    store.add_artifact(Artifact(suite="s", dataset="d0", model=f"m-{tag}", kind="hallucination",
                                payload_json='{"free": true}'))
    return store


def _content(url: str) -> dict:
    """A store's runs by uuid: cell, status, metrics, vectors and attached artifact payloads; and its free
    artifacts."""
    store = Store(url, read_only=True)
    arts = store.artifacts()
    out = {}
    for r in store.runs(status=None):
        vec = {m: v.tolist() for m, v in store.per_user(r.id).items()}
        out[r.uuid] = (cell(r), r.status, r.metrics_json, vec,
                       sorted(a.payload_json for a in arts if a.run_id == r.id))
    free = sorted((a.uuid, a.payload_json) for a in arts if a.run_id is None)
    return {"runs": out, "free": free}


def test_copy_moves_runs_vectors_and_artifacts_and_a_rerun_copies_nothing(tmp_path, store_url):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src, "a")
    rep = copy_store(src, store_url)
    assert (rep.runs_copied, rep.runs_present, rep.artifacts_copied, rep.artifacts_present) == (3, 0, 4, 0)
    assert _content(store_url) == _content(src)
    again = copy_store(src, store_url)
    assert (again.runs_copied, again.runs_present, again.artifacts_copied, again.artifacts_present) == (0, 3, 0, 4)
    assert _content(store_url) == _content(src)
    with Store(store_url).session() as s:
        assert len(list(s.exec(select(UserMetric)))) == 6


def test_two_sqlite_files_merge_into_one_store_and_back(tmp_path, store_url):
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _fill(a, "a")
    _fill(b, "b", n=2)
    Store(store_url).add_run(Run(group_id="own", suite="s", suite_hash="h", dataset="d0", model="own"),
                             {"auc": np.zeros(5)})  # the destination's own run stays
    for url in (a, b, a):
        copy_store(url, store_url)
    merged = _content(store_url)
    ca, cb = _content(a), _content(b)
    assert len(merged["runs"]) == 3 + 2 + 1
    assert all(merged["runs"][u] == v for u, v in {**ca["runs"], **cb["runs"]}.items())
    assert merged["free"] == sorted(ca["free"] + cb["free"])
    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert copy_store(store_url, back).runs_copied == 6
    assert _content(back) == merged


def test_each_run_is_copied_in_its_own_transaction(tmp_path, store_url, monkeypatch):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src, "a")
    uuids = [r.uuid for r in Store(src).runs(status=None)]
    real = run_files._fresh

    def failing(row, cls, **changes):  # the second run's artifact, after its run and vectors were flushed
        if cls is Artifact and row.payload_json == '{"k": 1}':
            raise RuntimeError("connection lost mid-run")
        return real(row, cls, **changes)

    monkeypatch.setattr(run_files, "_fresh", failing)
    with pytest.raises(RuntimeError):
        copy_store(src, store_url)
    dst = Store(store_url)
    assert [r.uuid for r in dst.runs(status=None)] == uuids[:1]  # the first run whole, the second not at all
    with dst.session() as s:
        assert len(list(s.exec(select(UserMetric)))) == 2 and len(list(s.exec(select(Artifact)))) == 1
    monkeypatch.setattr(run_files, "_fresh", real)
    assert copy_store(src, store_url).runs_copied == 2
    assert _content(store_url) == _content(src)


def test_bad_urls_and_disagreeing_stores_copy_nothing(tmp_path, store_url):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src, "a")
    new = tmp_path / "new.db"
    cli = CliRunner()
    for args, message in (
            (["--from", f"sqlite:///{tmp_path / 'none.db'}", "--to", f"sqlite:///{new}"], "--from: no results store"),
            (["--from", src, "--to", f"sqlite:///{tmp_path / 'nodir' / 'x.db'}"], "--to: .*does not exist"),
            (["--from", src, "--to", "nonsense://"], "--to: .*not a valid SQLAlchemy URL"),
            (["--from", src, "--to", f"sqlite:///{tmp_path}/./src.db"], "name the same store"),
            (["--from", "postgresql+psycopg://bob:s3cret@127.0.0.1:1/x", "--to", f"sqlite:///{new}"],
             r"--from: cannot open the results store postgresql\+psycopg://bob:\*\*\*@")):
        res = cli.invoke(app, ["store", "copy"] + args)
        assert res.exit_code == 1, (args, res.output)
        assert re.search(message, res.output), (args, res.output)
        assert "s3cret" not in res.output and not new.exists()
    # the same uuid as a different cell: the stores disagree, and nothing is copied
    clash = Store(src).runs(status=None)[1]
    Store(store_url).add_run(Run(**{**clash.model_dump(exclude={"id"}), "seed": 99}))
    with pytest.raises(BenchError, match=f"run {clash.uuid} is in both places as different cells"):
        copy_store(src, store_url)
    assert len(Store(store_url).runs(status=None)) == 1


def test_cli_copy_reports_counts(tmp_path):
    src, dst = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    _fill(src, "a")
    res = CliRunner().invoke(app, ["store", "copy", "--from", src, "--to", dst])
    assert res.exit_code == 0 and "copied 3 runs and 4 artifacts" in res.output, res.output
    res = CliRunner().invoke(app, ["store", "copy", "--from", src, "--to", dst])
    assert res.exit_code == 0 and "copied 0 runs and 0 artifacts" in res.output, res.output


def test_cli_upgrade_gives_an_old_store_its_uuids(tmp_path):
    from tests.test_store import _drop_uuids

    url = f"sqlite:///{tmp_path / 'old.db'}"
    _fill(url, "a")
    _drop_uuids(url)
    res = CliRunner().invoke(app, ["runs", "list", "--db", url])
    assert res.exit_code == 1 and "bench store upgrade" in res.output
    res = CliRunner().invoke(app, ["store", "upgrade", "--db", url])
    assert res.exit_code == 0 and "3 runs, 4 artifacts" in res.output, res.output
    assert CliRunner().invoke(app, ["store", "upgrade", "--db", url]).output.count("it was current") == 1
    assert CliRunner().invoke(app, ["runs", "list", "--db", url]).exit_code == 0
    res = CliRunner().invoke(app, ["store", "upgrade", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert res.exit_code == 1 and "no results store" in res.output and not (tmp_path / "none.db").exists()

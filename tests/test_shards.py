"""A cell scored in user shards (``bench run --shard K/N``) is merged into one run with the per-user vectors of an
unsplit run; shards travel as run files; an LLM's fit is made once and reused by the other shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.results.store import Store


def _run(suite, db, model, *extra, sets=()):
    args = ["run", "--suite", str(suite), "--model", model, "--db", db, *extra]
    for kv in sets:
        args += ["--set", kv]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def _completed(db):
    runs = Store(db).runs()
    assert len(runs) == 1
    return runs[0]


def _same_vectors(a_db, b_db):
    a, b = _completed(a_db), _completed(b_db)
    va, vb = Store(a_db).per_user(a.id), Store(b_db).per_user(b.id)
    assert sorted(va) == sorted(vb)
    for m in va:
        np.testing.assert_array_equal(va[m], vb[m])
    assert a.metrics == b.metrics and a.n_users == b.n_users and a.eval_users_hash == b.eval_users_hash
    assert a.config_hash == b.config_hash
    return a, b


def test_shards_merge_into_the_unsplit_run_in_any_order(frozen_tiny, tmp_path):
    whole, parts = f"sqlite:///{tmp_path / 'whole.db'}", f"sqlite:///{tmp_path / 'parts.db'}"
    _run(frozen_tiny, whole, "test-successor")
    for k in (3, 1):
        res = _run(frozen_tiny, parts, "test-successor", "--shard", f"{k}/3")
        assert f"shard {k}/3 stored" in res.output
    assert Store(parts).runs() == []  # shards are kept out of every table until the cell is whole
    assert len(Store(parts).runs(status="shard")) == 2
    res = _run(frozen_tiny, parts, "test-successor", "--shard", "2/3")
    assert "merged from its shards" in res.output
    _, merged = _same_vectors(whole, parts)
    info = json.loads(merged.run_info_json)["merged_from_shards"]
    assert info["of"] == 3 and len(info["runs"]) == 3 and "shard" not in json.loads(merged.run_info_json)
    # a rerun of a stored shard with --resume is skipped; the merge is not repeated
    _run(frozen_tiny, parts, "test-successor", "--shard", "2/3", "--resume")
    assert len(Store(parts).runs()) == 1 and len(Store(parts).runs(status="shard")) == 3


def test_shards_travel_as_run_files_and_merge_after_import(frozen_tiny, tmp_path):
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _run(frozen_tiny, a, "pop", "--shard", "1/2")
    res = CliRunner().invoke(app, ["store", "export", "--db", a, "--to", str(tmp_path / "files")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["store", "import", str(tmp_path / "files"), "--db", b])
    assert res.exit_code == 0, res.output
    assert len(Store(b).runs(status="shard")) == 1
    _run(frozen_tiny, b, "pop", "--shard", "2/2")  # the other machine adds the second shard: the cell is whole
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    _run(frozen_tiny, whole, "pop")
    _same_vectors(whole, b)


def test_an_llm_cell_fits_once_across_its_shards(frozen_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    budget = ["backbone=tiny-llama", "pretrain_steps=0", "max_pairs=16", "valid_users=4", "train_batch_size=8",
              "epochs=1"]
    whole, parts = f"sqlite:///{tmp_path / 'whole.db'}", f"sqlite:///{tmp_path / 'parts.db'}"
    _run(frozen_tiny, parts, "tallrec", "--shard", "1/2", sets=budget)
    _run(frozen_tiny, parts, "tallrec", "--shard", "2/2", sets=budget)
    first, second = sorted(Store(parts).runs(status="shard"), key=lambda r: r.id)
    assert json.loads(first.run_info_json)["fit_reused_from"] is None
    assert json.loads(second.run_info_json)["fit_reused_from"]  # loaded, not trained again
    assert json.loads(first.run_info_json)["history"] == json.loads(second.run_info_json)["history"]
    assert json.loads(first.run_info_json)["fitted_sha256"] == json.loads(second.run_info_json)["fitted_sha256"]
    _run(frozen_tiny, whole, "tallrec", sets=budget)  # an unsplit run trains again (outside shard mode)
    assert json.loads(_completed(whole).run_info_json)["fit_reused_from"] is None
    _same_vectors(whole, parts)


@pytest.mark.parametrize("bad", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2", "1/2/3"])
def test_a_bad_shard_is_one_error_line(frozen_tiny, tmp_path, bad):
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "pop", "--shard", bad,
                                   "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert res.exit_code == 1 and "--shard" in res.output and "Traceback" not in res.output


def test_more_shards_than_users_is_refused_before_the_fit(frozen_tiny, tmp_path):
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "pop", "--shard", "1/100000",
                                   "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert res.exit_code == 1 and "shard 1/100000" in res.output and "evaluation users" in res.output


def test_shards_of_different_fits_are_not_merged(frozen_tiny, tmp_path):
    import sqlite3

    path = tmp_path / "p.db"
    db = f"sqlite:///{path}"
    _run(frozen_tiny, db, "pop", "--shard", "1/2")
    con = sqlite3.connect(path)
    (info,) = con.execute("select run_info_json from runs").fetchone()
    info = json.loads(info)
    info["reproducibility"]["numerics_elsewhere"] = "another CPU"
    con.execute("update runs set run_info_json = ?", (json.dumps(info),))
    con.commit()
    con.close()
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "pop", "--shard", "2/2",
                                   "--db", db])
    assert res.exit_code == 1 and "shard 2 was scored by another fit than shard 1" in res.output
    assert Store(db).runs() == [] and len(Store(db).runs(status="shard")) == 2  # both shards kept, nothing merged


def test_an_llm_fit_travels_to_another_machine_for_the_other_shards(frozen_tiny, tmp_path, monkeypatch):
    budget = ["backbone=tiny-llama", "pretrain_steps=0", "max_pairs=16", "valid_users=4", "train_batch_size=8"]
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "machine-a"))
    _run(frozen_tiny, a, "tallrec", "--shard", "1/2", sets=budget)
    for args in (["store", "export", "--db", a, "--to", str(tmp_path / "runs")],
                 ["fits", "export", "--model", "tallrec", "--to", str(tmp_path / "fits")]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "machine-b"))  # a fresh cache: no fit, no captions
    for args in (["store", "import", str(tmp_path / "runs"), "--db", b], ["fits", "import", str(tmp_path / "fits")]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    res = _run(frozen_tiny, b, "tallrec", "--shard", "2/2", sets=budget)
    assert "merged from its shards" in res.output
    second = [r for r in Store(b).runs(status="shard") if json.loads(r.run_info_json)["shard"]["index"] == 1][0]
    assert json.loads(second.run_info_json)["fit_reused_from"]
    # a damaged fit file is refused with one line, nothing copied
    bad = next((tmp_path / "fits").glob("tallrec/*/fitted.safetensors"))
    bad.write_bytes(b"\x00" * 64)
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "machine-c"))
    res = CliRunner().invoke(app, ["fits", "import", str(tmp_path / "fits")])
    assert res.exit_code == 1 and "does not have the sha256" in res.output
    assert not (tmp_path / "machine-c" / "checkpoints").exists()

"""Portable run files (`bench store export` / `bench store import`), the reference runs (`bench leaderboard
--reference`) and `bench reproduce`: a round trip reproduces every run, vector and artifact byte for byte on SQLite
and PostgreSQL; every damaged or unsafe file is one `error:` line naming the file, with nothing stored."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.results import run_files
from mmsr_bench.results.store import Artifact, Run, Store, UserMetric
from mmsr_bench.results.store_copy import export_store, import_files


def _fill(url: str, n: int = 3, suite: str = "s", dataset: str | None = None, suite_hash: str = "h") -> Store:
    """n runs (the last failed) with consistent aggregates and per-user vectors, one attached artifact each, and
    one artifact attached to no run."""
    store = Store(url)
    rng = np.random.default_rng(0)
    for k in range(n):
        vecs = {"hr@10": (rng.random(7) < 0.4).astype(float), "ndcg@10": rng.random(7) / 3, "auc": rng.random(7)}
        failed = k == n - 1
        run = Run(group_id="g", suite=suite, suite_hash=suite_hash, dataset=dataset or f"d{k % 2}", model=f"m{k}",
                  seed=k, status="failed" if failed else "completed", n_users=7, config_json='{"dim": 4}',
                  metrics_json="{}" if failed else json.dumps({m: float(v.mean()) for m, v in vecs.items()}),
                  run_info_json='{"best_epoch": 2}')
        store.add_run(run, None if failed else vecs,
                      [Artifact(suite=suite, dataset=run.dataset, model=run.model, kind="note",
                                payload_json=f'{{"k": {k}}}')])
    store.add_artifact(Artifact(suite=suite, dataset=dataset or "d0", model="m0", kind="hallucination",
                                payload_json='{"free": [1, 2]}'))
    return store


def _dump(url: str) -> dict:
    """Everything a store holds, by uuid, ids left out: every Run column, the vector blobs decoded to bytes, the
    artifacts."""
    from sqlmodel import Session, select

    store = Store(url, read_only=True)
    out = {}
    with Session(store.engine) as s:
        runs = list(s.exec(select(Run)))
        vecs = {(m.run_id, m.metric): m.values for m in s.exec(select(UserMetric))}
        arts = list(s.exec(select(Artifact)))
    uuid_of = {r.id: r.uuid for r in runs}
    for r in runs:
        row = r.model_dump(exclude={"id"})
        row["started_at"] = row["started_at"].replace(tzinfo=None)
        row["finished_at"] = row["finished_at"] and row["finished_at"].replace(tzinfo=None)
        out[r.uuid] = (row, {m: np.load(__import__("io").BytesIO(__import__("zlib").decompress(b))).tobytes()
                             for (rid, m), b in vecs.items() if rid == r.id})
    artifacts = {a.uuid: (uuid_of.get(a.run_id), a.model_dump(exclude={"id", "run_id", "created_at"})) for a in arts}
    return {"runs": out, "artifacts": artifacts}


def test_export_then_import_reproduces_every_run_vector_and_artifact(tmp_path, store_url):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src)
    rep = export_store(src, tmp_path / "out", include_failed=True)
    assert (rep.runs, rep.artifacts, rep.files_written) == (3, 1, 4)
    files = sorted((tmp_path / "out").rglob("*.json"))
    assert {p.relative_to(tmp_path / "out").parts[:2] for p in files} == {("s", "d0"), ("s", "d1")}
    doc = json.loads(files[0].read_text())
    assert doc["format"] in (run_files.RUN_FORMAT, run_files.ARTIFACT_FORMAT) and len(doc["sha256"]) == 64
    got = import_files(tmp_path / "out", store_url)
    assert (got.runs_copied, got.artifacts_copied) == (3, 4)
    assert _dump(store_url) == _dump(src)
    again = import_files(tmp_path / "out", store_url)  # idempotent by uuid
    assert (again.runs_copied, again.runs_present, again.artifacts_copied) == (0, 3, 0)
    # exporting the imported store gives the same files, byte for byte
    export_store(store_url, tmp_path / "back", include_failed=True)
    for p in files:
        assert (tmp_path / "back" / p.relative_to(tmp_path / "out")).read_bytes() == p.read_bytes()
    # re-exporting into the same folder rewrites nothing
    assert export_store(src, tmp_path / "out", include_failed=True).files_unchanged == 4


def test_export_filters_and_cli(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    store = _fill(src)
    cli = CliRunner()
    res = cli.invoke(app, ["store", "export", "--db", src, "--to", str(tmp_path / "a"), "--model", "m1"])
    assert res.exit_code == 0 and "exported 1 runs, 0 loose artifacts and 0 tuning studies" in res.output, res.output
    uuid = store.runs(model="m0")[0].uuid
    res = cli.invoke(app, ["store", "export", "--db", src, "--to", str(tmp_path / "b"), "--run", uuid])
    assert res.exit_code == 0 and [p.stem for p in (tmp_path / "b").rglob("*.json")] == [uuid]
    res = cli.invoke(app, ["store", "export", "--db", src, "--to", str(tmp_path / "c"), "--model", "nobody"])
    assert res.exit_code == 1 and "error:" in res.output and not (tmp_path / "c").exists()
    res = cli.invoke(app, ["store", "import", str(tmp_path / "a"), "--db", f"sqlite:///{tmp_path / 'n.db'}"])
    assert res.exit_code == 0 and "imported 1 runs, 1 artifacts and 0 tuning studies" in res.output, res.output


def _rehash(path: Path, change) -> None:
    """Change a run file's content and give it a matching hash (a well-formed file with bad fields)."""
    doc = json.loads(path.read_text())
    change(doc)
    body = {k: v for k, v in doc.items() if k != "sha256"}
    doc["sha256"] = hashlib.sha256(run_files.canonical(body)).hexdigest()
    path.write_text(run_files.dump(doc))


def _set_vector(doc, metric, values):
    raw = np.asarray(values, dtype="<f8").tobytes()
    import base64
    import zlib

    doc["per_user"][metric] = {"n": len(values), "dtype": "<f8", "encoding": "zlib+base64",
                               "sha256": hashlib.sha256(raw).hexdigest(),
                               "data": base64.b64encode(zlib.compress(raw)).decode()}


def _bad_cases(tmp_path):
    def flip(p: Path):
        data = bytearray(p.read_bytes())
        i = data.index(b'"seed": ') + 8
        data[i] = ord("7") if data[i] != ord("7") else ord("8")
        p.write_bytes(bytes(data))

    def truncate(p: Path):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def short_vector(p: Path):
        _rehash(p, lambda d: _set_vector(d, "auc", [0.5] * 6))

    def unsafe_name(p: Path):
        _rehash(p, lambda d: d["run"].update(dataset="../../etc"))

    def fingerprint(p: Path):
        _rehash(p, lambda d: d["run"].update(suite="synth4", dataset="baby", suite_hash="0" * 64))

    def wrong_mean(p: Path):
        _rehash(p, lambda d: d["run"].update(metrics_json=d["run"]["metrics_json"].replace('"auc": 0', '"auc": 1')))

    def unknown_metric(p: Path):
        def change(d):
            d["per_user"]["hits@3"] = d["per_user"].pop("hr@10")
        _rehash(p, change)

    return {"flip": (flip, "sha256 does not match"), "truncate": (truncate, "not valid JSON"),
            "short_vector": (short_vector, r"per_user.auc has 6 values, but the run has n_users = 7"),
            "unsafe_name": (unsafe_name, "not a safe name"),
            "fingerprint": (fingerprint, "field suite_hash .* disagrees with the local spec of synth4/baby"),
            "wrong_mean": (wrong_mean, r"is not the mean of its per-user vector"),
            "unknown_metric": (unknown_metric, "metric 'hits@3'")}


@pytest.mark.parametrize("case", ["flip", "truncate", "short_vector", "unsafe_name", "fingerprint", "wrong_mean",
                                  "unknown_metric"])
def test_a_bad_file_is_one_error_line_naming_it_and_nothing_is_stored(tmp_path, case):
    import re

    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src)
    export_store(src, tmp_path / "out")
    target = next(p for p in sorted((tmp_path / "out").rglob("*.json")) if "artifact-" not in p.name
                  and json.loads(p.read_text())["run"]["status"] == "completed")
    damage, message = _bad_cases(tmp_path)[case]
    damage(target)
    dst = tmp_path / "dst.db"
    res = CliRunner().invoke(app, ["store", "import", str(tmp_path / "out"), "--db", f"sqlite:///{dst}"])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(target) in lines[0], res.output
    assert re.search(message, res.output.replace("\n", " ")), res.output
    assert "nothing was imported" in lines[0]
    assert not dst.exists() or not Store(f"sqlite:///{dst}", read_only=True).runs(status=None)
    assert "Traceback" not in res.output


def test_unsafe_names_never_become_paths_on_export(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src, suite="../../escape")
    res = CliRunner().invoke(app, ["store", "export", "--db", src, "--to", str(tmp_path / "out")])
    assert res.exit_code == 1 and "not a safe name" in res.output
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape").exists()


def test_a_file_for_the_same_uuid_with_other_content_is_not_overwritten(tmp_path):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    store = _fill(src)
    export_store(src, tmp_path / "out")
    run = store.runs(model="m0")[0]
    path = tmp_path / "out" / run.suite / run.dataset / f"{run.uuid}.json"
    _rehash(path, lambda d: d["run"].update(host="elsewhere"))
    before = path.read_bytes()
    with pytest.raises(Exception, match="exists with other content"):
        export_store(src, tmp_path / "out")
    assert path.read_bytes() == before


def test_leaderboard_reference_works_without_a_local_store_and_marks_reference_rows(tmp_path, monkeypatch):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src, suite="s", dataset="d0")
    export_store(src, tmp_path / "ref")
    monkeypatch.setenv("MMSR_BENCH_REFERENCE", str(tmp_path / "ref"))
    cli = CliRunner()
    none = f"sqlite:///{tmp_path / 'none.db'}"
    res = cli.invoke(app, ["leaderboard", "--suite", "s", "--db", none, "--format", "csv"])
    assert res.exit_code == 1 and "--reference" in res.output
    res = cli.invoke(app, ["leaderboard", "--suite", "s", "--db", none, "--reference", "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert "m0 (reference),d0,hr@10" in res.output and "m1 (reference),d0" in res.output
    assert not (tmp_path / "none.db").exists()
    # beside a local store: the local model and the reference model are separate rows, never merged as seeds
    local = f"sqlite:///{tmp_path / 'local.db'}"
    _fill(local, n=2, suite="s", dataset="d0")
    res = cli.invoke(app, ["leaderboard", "--suite", "s", "--db", local, "--reference", "--format", "csv",
                           "--against", "m0"])
    assert res.exit_code == 0, res.output
    rows = [ln.split(",") for ln in res.output.splitlines()[1:] if ln and not ln.startswith(("rows", "▲"))]
    models = {r[0] for r in rows}
    assert {"m0", "m0 (reference)", "m1 (reference)"} <= models
    assert all(r[5] == "1" for r in rows if r[0] in models)  # one seed each: nothing was pooled


def test_reproduce_reruns_a_reference_cell_and_prints_zero_difference(tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'made.db'}"
    cli = CliRunner()
    res = cli.invoke(app, ["run", "--suite", "synth4", "--dataset", "toys", "--model", "pop", "--db", db])
    assert res.exit_code == 0, res.output
    export_store(db, tmp_path / "ref")
    monkeypatch.setenv("MMSR_BENCH_REFERENCE", str(tmp_path / "ref"))
    uuid = Store(db).runs()[0].uuid
    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    res = cli.invoke(app, ["reproduce", uuid[:10], "--db", mine])
    assert res.exit_code == 0, res.output
    assert "reproduced exactly" in res.output and "reference" in res.output
    assert len(Store(mine).runs()) == 1
    res = cli.invoke(app, ["reproduce", "0123456789abcdef", "--db", mine])
    assert res.exit_code == 1 and "no completed run with that uuid" in res.output


def test_store_copy_refuses_unsafe_names_from_a_foreign_store(tmp_path):
    from mmsr_bench.errors import BenchError
    from mmsr_bench.results.store_copy import copy_store

    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src, suite="../../x")
    dst = tmp_path / "dst.db"
    with pytest.raises(BenchError, match="is not a safe name.*nothing was copied"):
        copy_store(src, f"sqlite:///{dst}")
    assert not Store(f"sqlite:///{dst}").runs(status=None)

"""Hostile suite files and arguments: every one is one `error:` line, nothing is written outside the cache, nothing
hangs or exhausts memory (a bounded read of regular files only, bounded counts, bounded nesting)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app

SUITE = """name = "{name}"
description = "x"
{extra}
[[datasets]]
name = "d"
source = "{source}"
category = "{category}"
"""


def _error(args, *needles):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in " ".join(res.output.split()), res.output
    return res.output


def test_a_category_cannot_write_outside_the_cache(tmp_path):
    suite = tmp_path / "evil.toml"
    target = tmp_path / "outside"
    suite.write_text(SUITE.format(name="evil", extra="", source="amazon2023", category=f"../../../../..{target}/pwned"))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "x.jsonl").write_text("{}\n")
    _error(["data", "import", str(suite), "--from", str(tmp_path / "raw")], "category", "is not a safe name")
    _error(["suite", "build", str(suite)], "is not a safe name")
    assert not target.exists()


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "folder", "huge"])
def test_suite_files_that_are_not_small_regular_files_are_refused(tmp_path, kind):
    path = tmp_path / "s.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_text('name = "s"\n# ' + "x" * (2 << 20) + "\n")
    _error(["suite", "show", str(path)], {"fifo": "not a regular file", "dev_zero": "not a regular file",
                                          "folder": "is a folder", "huge": "at most 1,048,576"}[kind])


def test_deep_nesting_and_long_extends_chains_are_refused(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text('name = "deep"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    _error(["suite", "show", str(deep)], "nested too deeply")
    for k in range(40):
        extra = f'extends = "c{k + 1}"' if k < 39 else ""
        (tmp_path / f"c{k}.toml").write_text(SUITE.format(name=f"c{k}", extra=extra, source="synth", category="baby")
                                            if k == 39 else f'name = "c{k}"\ndescription = "x"\n{extra}\n')
    _error(["suite", "show", str(tmp_path / "c0.toml")], "a chain of more than 16 suites")


@pytest.mark.parametrize("field,value,needle", [("seed", "-1", "protocol.seed"),
                                                ("n_negatives", "10000000000", "protocol.n_negatives"),
                                                ("max_eval_users", "99999999999999", "protocol.max_eval_users")])
def test_protocol_counts_are_bounded(tmp_path, field, value, needle):
    path = tmp_path / "p.toml"
    path.write_text(SUITE.format(name="p", extra="", source="synth", category="baby")
                    + f"[protocol]\n{field} = {value}\n")
    _error(["suite", "show", str(path)], needle)


def test_paths_homes_and_damaged_fields_are_one_error_line(tmp_path, monkeypatch):
    import sqlite3

    from mmsr_bench.results.store import Run, Store

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("MMSR_BENCH_HOME", str(afile))
    _error(["suite", "build", "synth4", "--dataset", "toys"], "is a file, not a folder")
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    _error(["run", "--suite", "/tmp/" + "a" * 300 + ".toml", "--model", "pop"], "not a usable path")
    _error(["report", "study", "--suite", "synth4", "--out", str(tmp_path)], "a folder; give a file name")
    _error(["adapter", "check", "pop", "--workdir", str(afile)], "a file, not a folder")
    db = tmp_path / "t.db"
    Store(f"sqlite:///{db}").add_run(Run(group_id="g", suite="synth4", suite_hash="h", dataset="toys", model="pop",
                                         metrics_json='{"auc": 0.5}'))
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET metrics_json = '{bad'")
    con.commit()
    con.close()
    for args in (["leaderboard", "--suite", "synth4"], ["runs", "list"], ["runs", "show", "1"]):
        _error(args + ["--db", f"sqlite:///{db}"], "field metrics_json is not valid JSON")


@pytest.mark.parametrize("damage,needle", [
    ("UPDATE user_metrics SET \"values\" = x'0011'", "damaged value in the per-user vectors"),
    ("UPDATE runs SET started_at = 'garbage'", "Invalid isoformat string"),
    ("DROP TABLE user_metrics", "no such table: user_metrics")])
def test_damaged_rows_blobs_and_tables_are_one_error_line_in_read_commands(tmp_path, damage, needle):
    import sqlite3

    import numpy as np

    from mmsr_bench.results.store import Run, Store

    db = tmp_path / "d.db"
    store = Store(f"sqlite:///{db}")
    for m in ("pop", "random"):
        store.add_run(Run(group_id="g", suite="s", suite_hash="h", dataset="d", model=m, n_users=3,
                          metrics_json='{"auc": 0.5}'), {"auc": np.full(3, 0.5)})
    con = sqlite3.connect(db)
    con.execute(damage)
    con.commit()
    con.close()
    url = f"sqlite:///{db}"
    _error(["compare", "1", "2", "--db", url], needle)
    if "runs" in damage:
        _error(["runs", "list", "--db", url], needle)
        _error(["leaderboard", "--suite", "s", "--db", url], needle)
    if "x'0011'" in damage:
        _error(["store", "copy", "--from", url, "--to", f"sqlite:///{tmp_path / 'c.db'}"], "cannot be decoded")
        _error(["store", "export", "--db", url, "--to", str(tmp_path / "out")], "cannot be decoded")


def test_long_and_nul_lines_in_data_files_are_quoted_briefly(tmp_path):
    from mmsr_bench.data.loaders import MAX_LINE_CHARS, load_sequence_file
    from mmsr_bench.errors import BenchError

    nul = tmp_path / "nul.txt"
    nul.write_text("1 " + "\x00" * (2 << 20) + "\n")
    with pytest.raises(BenchError) as exc:
        load_sequence_file(nul)
    assert len(str(exc.value)) < 1000 and "line 1" in str(exc.value)
    long = tmp_path / "long.txt"
    long.write_text("1 " + "2 " * (MAX_LINE_CHARS // 2 + 10) + "\n")
    with pytest.raises(BenchError, match="longer than"):
        load_sequence_file(long)


def test_an_id_of_thousands_of_digits_is_refused(tmp_path):
    from mmsr_bench.data.loaders import load_sequence_file
    from mmsr_bench.errors import BenchError

    f = tmp_path / "big.txt"
    f.write_text("1 " + "9" * 5000 + " 2 3 4 5\n")
    with pytest.raises(BenchError, match="at most 19 digits"):
        load_sequence_file(f)

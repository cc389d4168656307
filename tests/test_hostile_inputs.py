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
    assert res.output.startswith("error:") and "Traceback" not in res.output, res.output
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

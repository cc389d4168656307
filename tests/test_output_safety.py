"""No output format carries active HTML, a terminal escape or a spreadsheet formula taken from stored names; a name
that looks like rich markup prints as itself."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.results.store import Run, Store

NAMES = {
    "html": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "formula": '=HYPERLINK("http://evil.example","x")',
    "terminal": "\x1b]8;;http://evil.example\x07click\x1b]8;;\x07\x1b[31mred",
    "markup": "[/]",
}


@pytest.fixture
def hostile_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = Store(url)
    rng = np.random.default_rng(0)
    for k, name in enumerate(["pop", *NAMES.values()]):
        vecs = {"hr@10": (rng.random(9) < 0.3).astype(float), "ndcg@10": rng.random(9) / 4, "auc": rng.random(9)}
        store.add_run(Run(group_id="g", suite="s", suite_hash="h", dataset="d", model=name, seed=0, n_users=9,
                          metrics_json=json.dumps({m: float(v.mean()) for m, v in vecs.items()})), vecs)
    return url


def _invoke(*args):
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return res.output


def _no_active_content(text: str, html: bool = True) -> None:
    """No terminal escape; and (outputs read as HTML: markdown) no live tag."""
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    if html:
        assert "<script" not in text and "<img" not in text


@pytest.mark.parametrize("fmt", ["table", "markdown", "latex", "csv", "json"])
def test_leaderboard_formats_carry_no_active_content(hostile_store, fmt):
    out = _invoke("leaderboard", "--suite", "s", "--db", hostile_store, "--format", fmt, "--against", "pop")
    if fmt != "json":  # JSON is data: its string values are exact, and a JSON reader never runs them
        _no_active_content(out, html=fmt == "markdown")
    if fmt == "markdown":
        assert "&lt;script&gt;" in out
    if fmt == "csv":
        cells = [c for row in csv.reader(io.StringIO(out)) for c in row]
        assert not any(c.startswith(("=", "+", "@")) for c in cells)
        assert "'" + NAMES["formula"] in cells
    if fmt == "table":
        assert "[/]" in out and "click" in out


def test_runs_list_and_compare_print_names_as_text(hostile_store):
    out = _invoke("runs", "list", "--db", hostile_store)
    _no_active_content(out, html=False)
    assert "[/]" in out
    out = _invoke("runs", "list", "--db", hostile_store, "--format", "markdown")
    _no_active_content(out)
    out = _invoke("compare", NAMES["html"], "pop", "--suite", "s", "--dataset", "d", "--db", hostile_store,
                  "--format", "markdown")
    _no_active_content(out)

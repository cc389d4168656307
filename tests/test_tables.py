"""The one table writer (mmsr_bench.results.tables): markdown/LaTeX/HTML/CSV of one small table, ranking with ties and
lower-is-better columns, and the ablation numbers shared by the dashboard page and ``bench report ablations``."""

from __future__ import annotations

import csv
import io
import re

import pytest
from typer.testing import CliRunner

from mmsr_bench.errors import BenchError
from mmsr_bench.results import ablations as ablation_report
from mmsr_bench.results import tables
from mmsr_bench.results.tables import MISSING, Cell, Table, rank_columns
from tests.conftest import latex_balanced


def _table() -> Table:
    rows = (
        ("sas_rec & co", Cell("0.5000 ± 0.0100", 0.5, "+"), Cell("0.2000", 0.2), Cell("12", 12.0)),
        ("pop 100%", Cell("0.4000", 0.4, "*"), tables.missing(), Cell("30", 30.0)),
        ("<b>x</b>", Cell("0.5000", 0.5), Cell("0.1000", 0.1, "-"), Cell("12", 12.0)),
        ("gru", Cell("0.1000", 0.1), Cell("0.0500", 0.05), Cell("40", 40.0, "†")),
    )
    return Table(("model", "hr@10", "ndcg@10", "seconds"), rows, title="Results on beauty_2 & toys",
                 footer="▲/▼: better/worse than pop_x (5% level)", groups=(("Beauty", 2), ("Cost", 1)))


def _ranked() -> Table:
    return rank_columns(_table(), lower_is_better=[3])


def test_rank_columns_ties_share_ranks_and_lower_is_better():
    t = _ranked()
    ranks = [[c.rank for c in row[1:]] for row in t.rows]
    assert [r[0] for r in ranks] == [1, 2, 1, 0]  # the 0.5 tie shares rank 1, 0.4 is second
    assert [r[1] for r in ranks] == [1, 0, 2, 0]  # the missing cell is never ranked
    assert [r[2] for r in ranks] == [1, 2, 1, 0]  # lower is better: 12 (tied) best, 30 second
    only = rank_columns(_table(), columns=[2])
    assert all(c.rank == 0 for row in only.rows for c in (row[1], row[3]))
    assert only.rows[1][2] == Cell(MISSING) and MISSING == "missing"


def test_markdown_bold_underline_markers_missing_and_groups():
    md = tables.to_markdown(_ranked())
    lines = md.splitlines()
    assert lines[0] == "**Results on beauty_2 &amp; toys**"
    header = next(ln for ln in lines if ln.startswith("| model"))
    assert header == "| model | Beauty/hr@10 | Beauty/ndcg@10 | Cost/seconds |"  # groups flattened
    assert "|---|---:|---:|---:|" in lines
    assert "| sas_rec &amp; co | **0.5000 ± 0.0100** ▲ | **0.2000** | **12** |" in lines
    assert "| pop 100% | <u>0.4000</u>* | missing | <u>30</u> |" in lines
    assert "<u>0.1000</u> ▼" in md and "40†" in md
    assert lines[-1] == "▲/▼: better/worse than pop_x (5% level)"
    assert " 0 " not in md and "| 0 |" not in md  # a missing cell never reads as 0
    # one group spanning every value column is a heading, not a prefix
    single = Table(("model", "hr@10"), (("a", Cell("1", 1.0)),), groups=(("Beauty", 1),))
    assert "| model | hr@10 |" in tables.to_markdown(single)


def test_latex_structure_and_escaping():
    tex = tables.to_latex(_ranked(), label="tab:main")
    assert tex.count(r"\begin{tabular}{lrrr}") == 1 and tex.count(r"\end{tabular}") == 1
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\multicolumn{2}{c}{Beauty}" in tex and r"\multicolumn{1}{c}{Cost}" in tex
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-4}" in tex
    assert r"\label{tab:main}" in tex
    assert r"\textbf{0.5000}{\scriptsize$\pm$0.0100}$^{\dagger}$" in tex
    assert r"\underline{0.4000}$^{*}$" in tex and r"\underline{0.1000}$^{\ddagger}$" in tex
    assert r"40$^{\dagger}$" in tex
    assert r"sas\_rec \& co" in tex and r"pop 100\%" in tex and r"beauty\_2 \& toys" in tex
    assert r"pop\_x (5\% level)" in tex and r"$\dagger$/$\ddagger$" in tex  # footer in the caption
    caption = tex[tex.index(r"\caption{"):tex.index(r"\begin{tabular}")]
    assert "pop" in caption
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")]
    rows = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert len(rows) == 4 and all(len(re.findall(r"(?<!\\)&", ln)) == 3 for ln in rows)
    assert "missing" in rows[1]
    assert latex_balanced(tex)


def test_html_escapes_and_marks():
    out = tables.to_html(_ranked())
    assert out.startswith("<table>") and "</table>" in out
    assert "<caption>Results on beauty_2 &amp; toys</caption>" in out
    assert '<th colspan="2">Beauty</th>' in out and '<th colspan="1">Cost</th>' in out
    assert "&lt;b&gt;x&lt;/b&gt;" in out and "<b>x</b>" not in out  # label text escaped, never markup
    assert "sas_rec &amp; co" in out
    assert "<b>0.5000 ± 0.0100</b> ▲" in out and "<u>0.4000</u>*" in out and ">missing<" in out
    assert out.rstrip().endswith("<p>▲/▼: better/worse than pop_x (5% level)</p>")


def test_csv_round_trips():
    rows = list(csv.reader(io.StringIO(tables.to_csv(_ranked()))))
    assert rows[0] == ["model", "Beauty/hr@10", "Beauty/ndcg@10", "Cost/seconds"]
    assert rows[1] == ["sas_rec & co", "0.5000 ± 0.0100 ▲", "0.2000", "12"]
    assert rows[2] == ["pop 100%", "0.4000*", "missing", "30"]
    assert len(rows) == 5



# ------------------------------------------------------------------ ablations: one function for page and report


def test_dashboard_and_report_ablations_come_from_one_function(tmp_path, monkeypatch):
    from mmsr_bench.cli.main import app
    from mmsr_bench.dashboard import queries as q
    from mmsr_bench.dashboard import ui
    from mmsr_bench.dashboard.fixture import FixtureSpec, build_fixture_store
    from mmsr_bench.results.store import Store

    url = f"sqlite:///{tmp_path / 'results.db'}"
    spec = FixtureSpec(skill=(("pop", 0.15), ("mllm-srec-qlora", 0.55), ("mllm-srec-text", 0.45)), seeds=(0, 1),
                       perturbations=("blank:0.2",), n_users=60)
    build_fixture_store(url, spec)
    calls = []
    real = ablation_report.compute

    def spy(*a, **kw):
        calls.append(kw.get("prefix"))
        return real(*a, **kw)

    monkeypatch.setattr(ablation_report, "compute", spy)
    metrics = ("hr@10", "mrr")
    page = ui.ablation(url, Store(url).last_change(), "synth4", "mllm-srec-qlora", "mllm-srec-", metrics, "t", 0.05)
    report = ablation_report.build(Store(url), "synth4", "mllm-srec-qlora", metrics=list(metrics))
    assert len(calls) == 2  # both went through ablation_report.compute
    assert page == report and page.cells
    assert {c.variant for c in page.cells} == {"mllm-srec-text", "mllm-srec-qlora [blank:0.2]"}
    frame = q.ablation_frame(page.cells)
    assert list(frame["marker"]) == [c.marker for c in report.cells]
    res = CliRunner().invoke(app, ["report", "ablations", "--suite", "synth4", "--base", "mllm-srec-qlora",
                                   "--metric", "hr@10,mrr", "--format", "markdown", "--db", url])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == ablation_report.to_markdown(page).strip()
    for c in page.cells:  # the cell text and marker the page's data holds are the report's
        assert f"{c.mean:.4f} ({c.rel_change:+.1%})" in res.output
    with pytest.raises(BenchError, match="no completed runs"):
        ablation_report.build(Store(url), "synth4", "nosuch")

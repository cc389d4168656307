"""The tables in docs/ are generated from the reference runs: `bench docs --check` passes on the repository, names a
block that disagrees, and refuses a block that is not a read-only report command."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.paths import REPO_ROOT
from mmsr_bench.results.store_copy import export_store
from tests.test_run_files import _fill


def test_the_docs_tables_agree_with_the_reference_runs():
    docs = sorted((REPO_ROOT / "docs").glob("*.md"))
    assert any("<!-- bench: " in p.read_text() for p in docs), "docs/ has no generated block"
    res = CliRunner().invoke(app, ["docs", "--check"])
    assert res.exit_code == 0, res.output
    assert "generated blocks agree with the reference runs" in res.output


def _reference(tmp_path: Path) -> Path:
    src = f"sqlite:///{tmp_path / 'src.db'}"
    _fill(src, dataset="d0")
    export_store(src, tmp_path / "ref")
    return tmp_path / "ref"


def test_a_stale_block_is_named_and_bench_docs_regenerates_it(tmp_path):
    ref = _reference(tmp_path)
    doc = tmp_path / "page.md"
    doc.write_text("# Page\n\nText before.\n\n<!-- bench: leaderboard --suite s --format markdown -->\n"
                   "| stale |\n<!-- /bench -->\n\nText after.\n")
    cli = CliRunner()
    res = cli.invoke(app, ["docs", str(doc), "--check", "--reference", str(ref)])
    assert res.exit_code == 1 and f"{doc}:5: the generated block disagrees" in res.output, res.output
    assert "| stale |" in doc.read_text()  # --check writes nothing
    res = cli.invoke(app, ["docs", str(doc), "--reference", str(ref)])
    assert res.exit_code == 0 and "regenerated 1 of 1 blocks" in res.output, res.output
    text = doc.read_text()
    assert "| stale |" not in text and "| m0 |" in text and text.endswith("<!-- /bench -->\n\nText after.\n")
    res = cli.invoke(app, ["docs", str(doc), "--check", "--reference", str(ref)])
    assert res.exit_code == 0, res.output


def test_a_block_may_only_run_read_only_reports(tmp_path):
    ref = _reference(tmp_path)
    cli = CliRunner()
    for cmd, message in (("run --suite synth4 --model pop", "is not a report command"),
                         ("leaderboard --suite s --db sqlite:///x.db", "must not name --db"),
                         ("leaderboard --suite 'unclosed", "cannot parse"),
                         ("leaderboard --suite nothing-here", "failed: ")):
        doc = tmp_path / "page.md"
        doc.write_text(f"<!-- bench: {cmd} -->\nold\n<!-- /bench -->\n")
        res = cli.invoke(app, ["docs", str(doc), "--reference", str(ref)])
        assert res.exit_code == 1 and message in res.output and f"{doc}:1" in res.output, (cmd, res.output)
        assert doc.read_text().count("old") == 1

"""bench compare and marked leaderboards on stored runs: refusals, seeds aggregation, LaTeX structure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.errors import BenchError
from mmsr_bench.results import significance
from mmsr_bench.results.leaderboard import build_board
from mmsr_bench.results.store import Run, Store
from mmsr_bench.runner import execute as runner
from mmsr_bench.suites import spec as suites
from tests.conftest import latex_balanced


def _run(frozen, model, seeds=(0,), **overrides):
    spec = suites.load_suite(str(frozen))
    return runner.execute(runner.RunRequest(spec, model, ["seq"], list(seeds), {k: str(v) for k, v in overrides.items()}))


def test_compare_models_with_seeds_and_across_seed_test(frozen_tiny):
    good = _run(frozen_tiny, "test-successor", seeds=(0, 1, 2), noise=0.01)
    bad = _run(frozen_tiny, "test-successor", seeds=(0, 1, 2), noise=1000.0)
    store = Store()
    cmp = significance.compare(store, str(good[0].id), str(bad[0].id), metrics=["ndcg@10", "auc"])
    assert [r.metric for r in cmp.rows] == ["ndcg@10", "auc"]
    assert cmp.rows[0].diff > 0 and cmp.rows[0].significant
    # model names resolve to every seed of the latest runs; the across-seed test pairs seeds
    for r in bad:  # give the noisy runs their own model name through a copy in the store
        store.add_run(Run(**{**r.model_dump(exclude={"id", "uuid"}), "model": "noisy"}), store.per_user(r.id))
    cmp2 = significance.compare(store, "test-successor", "noisy", suite="tiny", dataset="seq", metrics=["ndcg@10"])
    assert len(cmp2.a_runs) == 3 and set(cmp2.seed_tests) == {"ndcg@10"}
    assert cmp2.seed_tests["ndcg@10"].seeds == (0, 1, 2)
    averaged = significance.seed_averaged(store, [store.run(i) for i in cmp2.a_runs], ["ndcg@10"])["ndcg@10"]
    np.testing.assert_allclose(averaged, np.mean([store.per_user(i)["ndcg@10"] for i in cmp2.a_runs], axis=0))


def test_refuses_incomparable_runs(frozen_tiny):
    a = _run(frozen_tiny, "test-successor")[0]
    store = Store()
    other = store.add_run(Run(**{**a.model_dump(exclude={"id", "uuid"}), "suite_hash": "different"}), store.per_user(a.id))
    with pytest.raises(BenchError, match="suite hashes differ"):
        significance.compare(store, str(a.id), str(other.id))
    users = store.add_run(Run(**{**a.model_dump(exclude={"id", "uuid"}), "eval_users_hash": "x"}), store.per_user(a.id))
    with pytest.raises(BenchError, match="different users"):
        significance.compare(store, str(a.id), str(users.id))
    res = CliRunner().invoke(app, ["compare", str(a.id), str(other.id)])
    assert res.exit_code == 1 and "suite hashes differ" in " ".join(res.output.split())
    with pytest.raises(BenchError, match="give --suite and --dataset"):
        significance.compare(store, "test-successor", str(a.id))


def test_cli_compare_json_and_markdown(frozen_tiny):
    a = _run(frozen_tiny, "test-successor", noise=0.01)[0]
    b = _run(frozen_tiny, "test-successor", noise=1000.0)[0]
    res = CliRunner().invoke(app, ["compare", str(a.id), str(b.id), "--format", "json", "--resamples", "500"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert {r["metric"] for r in payload["rows"]} >= {"ndcg@10", "auc"}
    assert all(0 <= r["p_corrected"] <= 1 for r in payload["rows"])
    md = CliRunner().invoke(app, ["compare", str(a.id), str(b.id), "--format", "markdown", "--metric", "auc",
                                  "--test", "wilcoxon", "--resamples", "500"])
    assert md.exit_code == 0 and "| auc |" in md.output


def test_leaderboard_against_marks_and_latex(frozen_tiny):
    store = Store()
    for r in _run(frozen_tiny, "test-successor", seeds=(0, 1), noise=1000.0):
        store.add_run(Run(**{**r.model_dump(exclude={"id", "uuid"}), "model": "noisy"}), store.per_user(r.id))
    _run(frozen_tiny, "test-successor", seeds=(0, 1), noise=0.01)  # newest runs of test-successor are the clean ones
    board = build_board(store, "tiny", None, ["ndcg@10", "hr@10"])
    assert board.cells[("test-successor", "seq", "ndcg@10")].n_seeds == 2
    footer = significance.mark_board(store, board, "noisy")
    assert board.cells[("test-successor", "seq", "ndcg@10")].marker == "+"
    assert "Holm-Bonferroni" in footer and "paired t-test" in footer
    res = CliRunner().invoke(app, ["leaderboard", "--suite", "tiny", "--against", "noisy", "--format", "latex",
                                   "--metric", "ndcg@10,hr@10"])
    assert res.exit_code == 0, res.output
    tex = res.output
    assert tex.count(r"\begin{tabular}") == 1 and tex.count(r"\end{tabular}") == 1
    assert r"\textbf{" in tex and r"\underline{" in tex and r"$^{\dagger}$" in tex
    body = tex[tex.index(r"\midrule"):tex.index(r"\bottomrule")]
    rows = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert len(rows) == 2 and all(ln.count("&") == 2 for ln in rows)  # model + 2 metric columns
    header = tex[tex.index(r"\toprule"):tex.index(r"\midrule")]
    assert r"\multicolumn{2}{c}{Seq}" in header
    assert latex_balanced(tex)


def test_compare_by_uuid_names_the_same_run_in_every_store(frozen_tiny):
    a = _run(frozen_tiny, "test-successor", noise=0.01)[0]
    b = _run(frozen_tiny, "test-successor", noise=1000.0)[0]
    store = Store()
    by_id = significance.compare(store, str(a.id), str(b.id), metrics=["auc"])
    by_uuid = significance.compare(store, a.uuid[:10], b.uuid, metrics=["auc"])
    assert by_uuid.a_runs == by_id.a_runs and by_uuid.b_runs == by_id.b_runs
    assert by_uuid.rows[0].p_t == by_id.rows[0].p_t and by_uuid.a_label == f"test-successor (run {a.uuid[:10]})"
    with pytest.raises(BenchError, match="no completed runs of model 'ffffffffff'|give --suite"):
        significance.compare(store, "ffffffffff", b.uuid)

"""Cross-checks of ``mmsr_bench.evaluation.metrics`` against independent implementations.

Why: the leaderboard's numbers are only as good as the metric engine, so every metric is compared per user with
ranx (HR, NDCG, Recall, MRR) and scikit-learn (AUC), on continuous scores and on tie-heavy scores. For ties the
engine promises the exact expectation over a uniformly random placement of the target inside its tie group; the
reference for that is ranx averaged over every tie-broken variant of the user's row.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.metrics import (RankCounts, aggregate, evaluate_scores, metric_names, parse_metric,
                                           per_user_metrics, rank_counts, rank_counts_full)

ranx = pytest.importorskip("ranx", reason="ranx is a test extra: pip install -e '.[test]'")
roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score

CUTOFFS = (1, 5, 10, 20)
OURS_TO_RANX = {f"{m}@{k}": f"{r}@{k}" for m, r in (("hr", "hit_rate"), ("ndcg", "ndcg"), ("recall", "recall")) for k in CUTOFFS}
OURS_TO_RANX["mrr"] = "mrr"
TOL = 1e-9


def _ranx_per_query(rows: list[np.ndarray], target_pos: list[int]) -> dict[str, np.ndarray]:
    """ranx per-query metrics for rows of candidate scores; ``target_pos[i]`` is the relevant column of row i."""
    width = len(str(len(rows)))
    qrels, run = {}, {}
    for i, (row, tpos) in enumerate(zip(rows, target_pos)):
        q = f"q{i:0{width}d}"  # zero-padded: ranx sorts query ids as strings
        qrels[q] = {f"d{tpos}": 1}
        run[q] = {f"d{j}": float(s) for j, s in enumerate(row)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's uint64 -> int64 cast warning inside ranx
        res = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(OURS_TO_RANX.values()), return_mean=False)
    return {ours: np.asarray(res[theirs], dtype=np.float64) for ours, theirs in OURS_TO_RANX.items()}


def _reference(scores: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-6) -> dict[str, np.ndarray]:
    """Expected ranx metrics under the uniform tie rule: average over the t+1 tie-broken variants of each row.

    Masked candidates are dropped from the row. Tied negatives are nudged by +-eps so that exactly p of them sit
    above the target, for p = 0..t; eps must be smaller than the gap between distinct scores."""
    rows, tpos, owner = [], [], []
    for u in range(scores.shape[0]):
        keep = np.ones(scores.shape[1], dtype=bool) if mask is None else ~mask[u]
        keep[0] = True
        row = scores[u, keep].astype(np.float64)
        tied = np.flatnonzero(row[1:] == row[0]) + 1
        for p in range(len(tied) + 1):
            variant = row.copy()
            variant[tied[:p]] += eps
            variant[tied[p:]] -= eps
            rows.append(variant)
            tpos.append(0)
            owner.append(u)
    per_query = _ranx_per_query(rows, tpos)
    owner_arr = np.asarray(owner)
    n_variants = np.bincount(owner_arr, minlength=scores.shape[0])
    return {m: np.bincount(owner_arr, weights=v, minlength=scores.shape[0]) / n_variants for m, v in per_query.items()}


def _auc_reference(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(scores.shape[0])
    for u in range(scores.shape[0]):
        keep = np.ones(scores.shape[1], dtype=bool) if mask is None else ~mask[u]
        keep[0] = True
        row = scores[u, keep]
        y = np.zeros(len(row), dtype=int)
        y[0] = 1
        out[u] = roc_auc_score(y, row)
    return out


def _auc_bruteforce(scores: np.ndarray) -> np.ndarray:
    t = scores[:, :1]
    neg = scores[:, 1:]
    return ((t > neg).sum(axis=1) + 0.5 * (t == neg).sum(axis=1)) / neg.shape[1]


ALL_NAMES = list(OURS_TO_RANX) + ["auc"]


def _assert_close(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    for name, ref_vals in ref.items():
        np.testing.assert_allclose(ours[name], ref_vals, rtol=0, atol=TOL, err_msg=name)


def test_continuous_scores_match_ranx_and_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(500, 101))
    scores[:, 0] += 1.5  # make the target rank high often enough that every cutoff sees hits and misses
    ours = evaluate_scores(scores, ALL_NAMES)
    _assert_close(ours, _ranx_per_query(list(scores), [0] * len(scores)))
    np.testing.assert_allclose(ours["auc"], _auc_reference(scores), atol=TOL)
    np.testing.assert_allclose(ours["auc"], _auc_bruteforce(scores), atol=TOL)
    assert 0.05 < ours["hr@1"].mean() < 0.95 and 0.05 < ours["hr@20"].mean() < 0.999
    # one target per user: recall equals hit rate
    for k in CUTOFFS:
        np.testing.assert_array_equal(ours[f"recall@{k}"], ours[f"hr@{k}"])


def test_target_not_in_column_zero_matches_ranx() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(100, 40))
    cols = rng.integers(0, 40, size=100)
    counts = RankCounts.concat([rank_counts(scores[i : i + 1], target_col=int(c)) for i, c in enumerate(cols)])
    ours = per_user_metrics(counts, list(OURS_TO_RANX))
    _assert_close(ours, _ranx_per_query(list(scores), [int(c) for c in cols]))


@pytest.mark.parametrize("n_values,seed", [(3, 2), (6, 3)])
def test_tie_heavy_scores_match_expected_ranx(n_values: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, n_values, size=(120, 51)).astype(np.float64)
    ours = evaluate_scores(scores, ALL_NAMES)
    counts = rank_counts(scores)
    assert counts.ties.min() >= 1 and counts.ties.mean() > 5  # the point of this test: many ties
    _assert_close(ours, _reference(scores))
    np.testing.assert_allclose(ours["auc"], _auc_reference(scores), atol=TOL)
    np.testing.assert_allclose(ours["auc"], _auc_bruteforce(scores), atol=TOL)


def test_mask_drops_candidates_like_removing_them() -> None:
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 8, size=(80, 61)).astype(np.float64)
    mask = rng.random(scores.shape) < 0.3
    mask[:, 0] = True  # a mask on the target column must be ignored: the target is never dropped
    ours = evaluate_scores(scores, ALL_NAMES, mask=mask)
    _assert_close(ours, _reference(scores, mask))
    np.testing.assert_allclose(ours["auc"], _auc_reference(scores, mask), atol=TOL)
    counts = rank_counts(scores, mask)
    np.testing.assert_array_equal(counts.n_neg, (~mask[:, 1:]).sum(axis=1))


@pytest.mark.parametrize("n_cand", [2, 11, 101])
def test_constant_scorer_gets_random_ranking_values(n_cand: int) -> None:
    scores = np.full((7, n_cand), 0.25)
    names = [f"hr@{k}" for k in (1, 5, 10, 20)] + [f"ndcg@{k}" for k in (1, 5, 10, 20)] + ["mrr", "auc"]
    ours = evaluate_scores(scores, names)
    ranks = np.arange(1, n_cand + 1)
    for k in (1, 5, 10, 20):
        assert np.all(ours[f"hr@{k}"] == min(k, n_cand) / n_cand)
        expect_ndcg = np.sum(np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)) / n_cand
        np.testing.assert_allclose(ours[f"ndcg@{k}"], expect_ndcg, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["mrr"], np.mean(1.0 / ranks), rtol=0, atol=1e-12)
    assert np.all(ours["auc"] == 0.5)


def test_column_permutation_changes_nothing() -> None:
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 5, size=(200, 31)).astype(np.float64)
    mask = rng.random(scores.shape) < 0.2
    base = per_user_metrics(rank_counts(scores, mask), ALL_NAMES)
    perm = rng.permutation(scores.shape[1])
    new_target_col = int(np.flatnonzero(perm == 0)[0])
    assert new_target_col != 0
    moved = per_user_metrics(rank_counts(scores[:, perm], mask[:, perm], target_col=new_target_col), ALL_NAMES)
    for name in ALL_NAMES:
        np.testing.assert_array_equal(moved[name], base[name], err_msg=name)


def test_full_ranking_agrees_with_sampled_path() -> None:
    rng = np.random.default_rng(6)
    n_users, n_items = 60, 50
    scores = rng.integers(0, 6, size=(n_users, n_items)).astype(np.float64)  # item j+1 at column j
    targets = rng.integers(1, n_items + 1, size=n_users)
    exclude = [rng.choice(np.arange(1, n_items + 1), size=rng.integers(0, 15), replace=False) for _ in range(n_users)]
    exclude[0] = np.append(exclude[0], targets[0])  # the target is never dropped even if listed
    exclude[1] = np.array([], dtype=np.int64)
    full = rank_counts_full(scores, targets, exclude)

    # the same problem as a sampled matrix: target first, then every other item; mask = excluded items
    cand = np.empty((n_users, n_items), dtype=np.int64)
    mask = np.zeros((n_users, n_items), dtype=bool)
    for u in range(n_users):
        others = np.array([i for i in range(1, n_items + 1) if i != targets[u]])
        cand[u] = np.concatenate([[targets[u]], rng.permutation(others)])
        mask[u] = np.isin(cand[u], exclude[u])
        mask[u, 0] = False
    sampled = rank_counts(np.take_along_axis(scores, cand - 1, axis=1), mask)
    for field in ("greater", "ties", "n_neg"):
        np.testing.assert_array_equal(getattr(full, field), getattr(sampled, field), err_msg=field)
    a = per_user_metrics(full, ALL_NAMES)
    b = per_user_metrics(sampled, ALL_NAMES)
    for name in ALL_NAMES:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad: float) -> None:
    scores = np.zeros((4, 5))
    scores[2, 3] = bad
    with pytest.raises(BenchError, match="NaN or infinite"):
        rank_counts(scores)
    with pytest.raises(BenchError, match="NaN or infinite"):
        rank_counts_full(scores, np.array([1, 2, 3, 4]), [np.array([], dtype=np.int64)] * 4)


def test_bad_shape_raises() -> None:
    with pytest.raises(BenchError, match="2-D"):
        rank_counts(np.zeros(5))


@pytest.mark.parametrize(
    "name,pattern",
    [("foo@10", "unknown metric"), ("hr", "needs a cutoff"), ("mrr@10", "takes no cutoff"), ("ndcg@x", "unknown metric"),
     ("", "unknown metric"), ("auc@5", "takes no cutoff")],
)
def test_parse_metric_errors(name: str, pattern: str) -> None:
    with pytest.raises(BenchError, match=pattern):
        parse_metric(name)


def test_parse_metric_and_names() -> None:
    assert parse_metric(" NDCG@10 ") == ("ndcg", 10)
    assert parse_metric("auc") == ("auc", None)
    assert metric_names(["hr", "ndcg", "mrr"], [5, 10]) == ["hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr"]
    with pytest.raises(BenchError):
        per_user_metrics(rank_counts(np.zeros((2, 3))), ["hr@0x"])


def test_aggregate_means() -> None:
    out = aggregate({"hr@1": np.array([1.0, 0.0, 0.5]), "mrr": np.array([])})
    assert out["hr@1"] == pytest.approx(0.5)
    assert np.isnan(out["mrr"])

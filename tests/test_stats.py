"""Checks of ``mmsr_bench.results.stats``: agreement with ranx and scipy, exact small cases, calibration and power.

Why: a significance marker on the leaderboard is a claim; these tests check that the p-values equal independent
implementations (ranx's Student t and Fisher randomization tests, brute-force enumeration), that under the null
the tests reject at their nominal rate, and that a planted effect is found and covered by the CI.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.metrics import evaluate_scores
from mmsr_bench.results.stats import across_seed_test, compare_metrics, correct, paired_tests, seed_summary

ranx = pytest.importorskip("ranx", reason="ranx is a test extra: pip install -e '.[test]'")


def _binom_band(n: int, p: float, level: float = 0.999) -> tuple[float, float]:
    lo, hi = sps.binom.interval(level, n, p)
    return lo / n, hi / n


# --- agreement with ranx ---------------------------------------------------------------------------------------


def _runs_from_scores(scores: np.ndarray, name: str) -> "ranx.Run":
    width = len(str(len(scores)))
    return ranx.Run({f"q{i:0{width}d}": {f"d{j}": float(s) for j, s in enumerate(row)} for i, row in enumerate(scores)},
                    name=name)


def test_t_and_randomization_p_values_match_ranx_compare() -> None:
    rng = np.random.default_rng(10)
    n_users, n_cand = 400, 101
    base = rng.normal(size=(n_users, n_cand))
    sys_a = base.copy()
    sys_a[:, 0] += 1.0
    sys_b = base + rng.normal(scale=0.5, size=base.shape)
    sys_b[:, 0] += 1.2  # a small, borderline difference: p-values land away from 0 and 1
    qrels = ranx.Qrels({f"q{i:03d}": {"d0": 1} for i in range(n_users)})
    run_a, run_b = _runs_from_scores(sys_a, "a"), _runs_from_scores(sys_b, "b")
    ours_names = {"ndcg@10": "ndcg@10", "hr@10": "hit_rate@10", "mrr": "mrr"}
    ua = evaluate_scores(sys_a, list(ours_names))
    ub = evaluate_scores(sys_b, list(ours_names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student = ranx.compare(qrels, [run_a, run_b], list(ours_names.values()), stat_test="student")
        fisher = ranx.compare(qrels, [run_a, run_b], list(ours_names.values()), stat_test="fisher",
                              n_permutations=10_000, random_seed=7)
    mid = 0
    for ours, theirs in ours_names.items():
        r = paired_tests(ua[ours], ub[ours], n_boot=200, n_perm=10_000, seed=3)
        assert r.mean_a == pytest.approx(student.results["a"][theirs], abs=1e-12)
        assert r.mean_b == pytest.approx(student.results["b"][theirs], abs=1e-12)
        p_student = student.comparisons["a", "b"][theirs]["p_value"]
        p_fisher = fisher.comparisons["a", "b"][theirs]["p_value"]
        assert r.p_t == pytest.approx(p_student, rel=1e-9, abs=1e-12)
        # two independent Monte-Carlo estimates with 10k draws each: sd of their difference <= 0.0071
        assert abs(r.p_perm - p_fisher) < 0.03, (ours, r.p_perm, p_fisher)
        mid += 0.01 < p_student < 0.95
    assert mid >= 2  # the comparison was informative, not all p ~ 0 or ~ 1


@pytest.mark.parametrize("shift,seed", [(0.0, 0), (0.03, 1), (0.06, 2)])
def test_randomization_matches_ranx_fisher_function(shift: float, seed: int) -> None:
    from ranx.statistical_tests import fisher_randomization_test

    rng = np.random.default_rng(seed)
    a = rng.random(800)
    b = np.clip(a - shift + rng.normal(0, 0.4, 800), 0, 1)
    ours = paired_tests(a, b, n_boot=100, n_perm=20_000, seed=seed)
    p_ranx, _ = fisher_randomization_test(a, b, 20_000, 0.05, 42)
    assert abs(ours.p_perm - p_ranx) < 0.025, (ours.p_perm, p_ranx)


# --- exact small cases -------------------------------------------------------------------------------------------


def test_exact_randomization_and_wilcoxon_by_enumeration() -> None:
    rng = np.random.default_rng(11)
    d = rng.normal(0.4, 1.0, size=11)  # distinct, non-zero
    b = rng.random(11)
    a = b + d
    r = paired_tests(a, b, n_boot=500, n_perm=10_000)
    assert r.perm_exact and r.n_perm == 2**11
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=11)))
    null = (signs * d).mean(axis=1)
    expect_perm = np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)
    assert r.p_perm == pytest.approx(expect_perm, abs=1e-12)
    scipy_perm = sps.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                      permutation_type="samples", n_resamples=10_000, vectorized=True)
    assert r.p_perm == pytest.approx(scipy_perm.pvalue, abs=1e-12)
    # exact Wilcoxon: W+ over all sign patterns of the ranks
    ranks = sps.rankdata(np.abs(d))
    w_null = ((signs > 0) * ranks).sum(axis=1)
    w_obs = ranks[d > 0].sum()
    expect_w = min(1.0, 2 * min(np.mean(w_null <= w_obs), np.mean(w_null >= w_obs)))
    assert r.p_wilcoxon == pytest.approx(expect_w, abs=1e-12)


def test_known_small_values_and_cohens_d() -> None:
    a = np.array([3.0, 5.0, 7.0])
    b = np.array([2.0, 3.0, 4.0])  # d = [1, 2, 3]: mean 2, sd 1
    r = paired_tests(a, b, n_boot=1000, n_perm=1000)
    assert (r.mean_a, r.mean_b, r.diff) == (5.0, 3.0, 2.0)
    assert r.rel_diff == pytest.approx(2.0 / 3.0)
    assert r.cohen_d == pytest.approx(2.0)
    t = 2.0 / (1.0 / math.sqrt(3))
    assert r.t_stat == pytest.approx(t)
    assert r.p_t == pytest.approx(2 * sps.t.sf(t, 2))
    assert r.p_perm == pytest.approx(2 / 8)  # exact: only all-plus and all-minus reach |mean| >= 2
    assert 1.0 <= r.ci_low <= r.ci_high <= 3.0


def test_degenerate_inputs() -> None:
    x = np.array([0.0, 1.0, 0.5, 0.25, 1.0, 0.0] * 20)
    same = paired_tests(x, x.copy(), n_boot=500, n_perm=500)
    assert (same.p_t, same.p_wilcoxon, same.p_perm, same.p_bootstrap) == (1.0, 1.0, 1.0, 1.0)
    assert (same.diff, same.cohen_d, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0, 0.0)
    shifted = paired_tests(x + 0.1, x, n_boot=500, n_perm=500)
    assert shifted.p_t == 0.0 and shifted.cohen_d == 0.0 and shifted.p_perm < 0.01
    assert shifted.ci_low == pytest.approx(0.1) and shifted.ci_high == pytest.approx(0.1)
    zero_b = paired_tests(np.ones(5), np.zeros(5), n_boot=10, n_perm=10)
    assert math.isnan(zero_b.rel_diff)


def test_bad_inputs_raise() -> None:
    with pytest.raises(BenchError, match="NaN"):
        paired_tests(np.array([0.1, np.nan, 0.3]), np.zeros(3))
    with pytest.raises(BenchError, match="differ in length"):
        paired_tests(np.zeros(4), np.zeros(5))
    with pytest.raises(BenchError, match="at least 2"):
        paired_tests(np.zeros(1), np.zeros(1))
    with pytest.raises(BenchError, match="1-D"):
        paired_tests(np.zeros((3, 2)), np.zeros((3, 2)))


# --- bootstrap ---------------------------------------------------------------------------------------------------


def test_bootstrap_ci_matches_scipy_percentile() -> None:
    rng = np.random.default_rng(12)
    b = rng.random(600)
    a = np.clip(b + rng.exponential(0.05, 600) - 0.03, 0, 1)
    ours = paired_tests(a, b, n_boot=10_000, n_perm=100, seed=1)
    ref = sps.bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                        n_resamples=10_000, method="percentile", rng=np.random.default_rng(99))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(ours.ci_low - ref.confidence_interval.low) < 0.05 * width
    assert abs(ours.ci_high - ref.confidence_interval.high) < 0.05 * width
    se = (a - b).std(ddof=1) / math.sqrt(len(a))  # the normal-theory interval is close for n = 600
    assert ours.ci_high - ours.ci_low == pytest.approx(2 * 1.96 * se, rel=0.08)


# --- calibration and power ----------------------------------------------------------------------------------------


def test_aa_experiment_rejects_at_nominal_rate() -> None:
    """Two systems with identically distributed per-user values: every test should reject ~5% of the time."""
    rng = np.random.default_rng(2024)
    reps, n = 400, 300
    rejected = {"t": 0, "wilcoxon": 0, "perm": 0, "bootstrap": 0}
    for rep in range(reps):
        quality = rng.beta(2, 5, size=n)  # user difficulty shared by both systems (pairing matters)
        a = (rng.random(n) < quality) * rng.uniform(0.3, 1.0, n)  # NDCG-like: many zeros, continuous hits
        b = (rng.random(n) < quality) * rng.uniform(0.3, 1.0, n)
        r = paired_tests(a, b, n_boot=400, n_perm=400, seed=rep)
        for test in rejected:
            rejected[test] += r.p(test) < 0.05
    lo, hi = _binom_band(reps, 0.05)
    for test, count in rejected.items():
        assert lo <= count / reps <= hi, (test, count / reps, (lo, hi))


def test_planted_difference_is_detected_and_covered() -> None:
    rng = np.random.default_rng(7)
    delta, reps, n = 0.02, 200, 400
    detected = {"t": 0, "wilcoxon": 0, "perm": 0, "bootstrap": 0}
    covered, d_values = 0, []
    for rep in range(reps):
        b = rng.random(n)
        # power: symmetric noise, z = 0.02 / (0.06 / 20) = 6.7, so every test should find it
        r = paired_tests(b + delta + rng.normal(0, 0.06, n), b, n_boot=500, n_perm=500, seed=rep)
        for test in detected:
            detected[test] += r.p(test) < 0.05
        d_values.append(r.cohen_d)
        # coverage of the bootstrap CI of the mean: skewed zero-mean noise (the mean is not the median here)
        r = paired_tests(b + delta + rng.exponential(0.06, n) - 0.06, b, n_boot=500, n_perm=10, seed=rep)
        covered += r.ci_low <= delta <= r.ci_high
    for test, count in detected.items():
        assert count / reps >= 0.98, (test, count)
    assert np.mean(d_values) == pytest.approx(delta / 0.06, rel=0.05)  # Cohen's d_z = 0.02 / 0.06
    lo, hi = _binom_band(reps, 0.95)
    assert lo <= covered / reps <= hi, covered / reps


# --- corrections and comparison tables ----------------------------------------------------------------------------


def test_corrections_known_values_and_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(correct(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(correct(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    np.testing.assert_allclose(correct(p, "fdr_bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_array_equal(correct(p, "none"), p)
    rand = np.random.default_rng(0).random(17) ** 3
    for method in ("holm", "fdr_bh", "bonferroni"):
        np.testing.assert_allclose(correct(rand, method), multipletests(rand, method=method)[1])
    assert correct([], "holm").size == 0
    with pytest.raises(BenchError, match="unknown correction"):
        correct(p, "sidak-ish")
    with pytest.raises(BenchError, match=r"\[0, 1\]"):
        correct([0.2, 1.5], "holm")


def test_compare_metrics_rows() -> None:
    rng = np.random.default_rng(13)
    n = 3000
    scores_b = rng.normal(size=(n, 51))
    scores_a = scores_b.copy()
    scores_a[:, 0] += rng.normal(0.25, 0.5, n)  # system a lifts the target: a real improvement
    names = ["hr@5", "hr@10", "ndcg@10", "mrr", "auc"]
    ua, ub = evaluate_scores(scores_a, names), evaluate_scores(scores_b, names)
    rows = compare_metrics(ua, ub, test="perm", correction="holm", n_boot=2000, n_perm=2000, seed=5)
    assert [r.metric for r in rows] == names
    np.testing.assert_allclose([r.p_corrected for r in rows], correct([r.p_perm for r in rows], "holm"))
    for r in rows:
        single = paired_tests(ua[r.metric], ub[r.metric], n_boot=2000, n_perm=2000, seed=5)
        # same seed, same draws; only BLAS summation order differs between one and five columns
        got = (r.p_t, r.p_wilcoxon, r.p_perm, r.p_bootstrap, r.ci_low, r.ci_high)
        want = (single.p_t, single.p_wilcoxon, single.p_perm, single.p_bootstrap, single.ci_low, single.ci_high)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert r.diff > 0 and r.significant == (r.p_corrected < 0.05)
        assert r.rel_diff == pytest.approx(r.diff / r.mean_b)
    assert all(r.significant for r in rows)
    sub = compare_metrics(ua, ub, metrics=["mrr"], test="t", correction="none", n_boot=100, n_perm=100)
    assert len(sub) == 1 and sub[0].p_corrected == sub[0].p_t
    with pytest.raises(BenchError, match="missing"):
        compare_metrics(ua, ub, metrics=["ndcg@20"])
    with pytest.raises(BenchError, match="unknown test"):
        compare_metrics(ua, ub, test="anova")
    with pytest.raises(BenchError, match="differ in length"):
        compare_metrics({"mrr": ua["mrr"]}, {"mrr": ub["mrr"][:-1]})


# --- seeds -------------------------------------------------------------------------------------------------------


def test_seed_summary_known_values() -> None:
    mean, half = seed_summary([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half == pytest.approx(2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5), rel=1e-9)  # t(0.975, 4)
    _, half99 = seed_summary([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.99)
    assert half99 == pytest.approx(4.604094871415897 * math.sqrt(0.5), rel=1e-9)  # t(0.995, 4)
    one_mean, one_half = seed_summary([0.31])
    assert one_mean == 0.31 and math.isnan(one_half)
    assert seed_summary([0.2, 0.2, 0.2]) == (pytest.approx(0.2), 0.0)
    with pytest.raises(BenchError):
        seed_summary([])
    with pytest.raises(BenchError):
        seed_summary([0.1, float("nan")])


def test_across_seed_test() -> None:
    a = {0: 1.0, 1: 2.0, 2: 3.0, 7: 9.0}
    b = {0: 0.5, 1: 1.7, 2: 2.1, 8: -4.0}  # seeds 7 and 8 are unpaired and ignored
    r = across_seed_test(a, b)
    d = np.array([0.5, 0.3, 0.9])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert r.test == "paired-t" and r.seeds == (0, 1, 2)
    assert r.diff == pytest.approx(d.mean())
    assert r.t_stat == pytest.approx(t) and r.p_value == pytest.approx(2 * sps.t.sf(t, 2))
    with pytest.raises(BenchError, match="1 shared"):
        across_seed_test({0: 1.0, 1: 2.0}, {1: 1.0, 2: 3.0})
    w = across_seed_test({0: 1.0, 1: 1.4, 2: 1.1}, {3: 0.2, 4: 0.9}, allow_unpaired=True)
    ref = sps.ttest_ind([1.0, 1.4, 1.1], [0.2, 0.9], equal_var=False)
    assert w.test == "welch" and w.p_value == pytest.approx(ref.pvalue) and w.t_stat == pytest.approx(ref.statistic)
    with pytest.raises(BenchError, match="per system"):
        across_seed_test({0: 1.0}, {3: 0.2, 4: 0.9}, allow_unpaired=True)

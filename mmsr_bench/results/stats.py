"""Significance tests for comparing two systems on per-user metric vectors (pure functions, no store access).

Why: a leaderboard gap of 0.3 NDCG points means nothing without knowing whether it survives user-level noise.
Everything here works on aligned per-user vectors (user i of ``a`` is user i of ``b``) and reports the paired
Student t-test, the Wilcoxon signed-rank test, a paired randomization (sign-flip) test, a paired bootstrap CI and
bootstrap p-value, Cohen's d for paired samples, and multiple-testing corrections across metrics.

Conventions:

* ``diff = mean(a) - mean(b)``: ``a`` is the system under test, ``b`` the baseline; ``rel_diff = diff / mean(b)``
  (NaN when ``mean(b) == 0``).
* Resampling (bootstrap, randomization) is vectorized: one chunk of resamples at a time is drawn as a
  (chunk x users) matrix of counts or sign bits and multiplied with the (users x metrics) matrix of differences, so
  10,000 resamples of ~22k users x 12 metrics take seconds. All metrics of one :func:`compare_metrics` call share
  the same resamples (a joint paired bootstrap), and a seed gives the same draws whatever the number of metrics, so
  a row of :func:`compare_metrics` equals :func:`paired_tests` on that metric with the same seed.
* The randomization test flips the sign of each user's difference (exchanging the two systems for that user).
  Its two-sided p-value is ``(1 + #{|mean*| >= |mean|}) / (n_perm + 1)``; when ``2**n <= n_perm`` all sign vectors
  are enumerated and the p-value is exact.
* The bootstrap CI is the percentile interval of the resampled mean difference; the bootstrap p-value uses the
  shift method (resampled means re-centred at zero under the null; Efron & Tibshirani 1993, Sakai 2006):
  ``(1 + #{|mean* - mean| >= |mean|}) / (n_boot + 1)``.
* Degenerate inputs give defined answers instead of NaN: all-zero differences give p = 1 for every test and d = 0;
  constant non-zero differences give t-test p = 0 and d = 0 (d is defined as 0 when the sd of the differences is 0).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)

TestName = Literal["t", "wilcoxon", "perm", "bootstrap"]
TESTS: tuple[str, ...] = ("t", "wilcoxon", "perm", "bootstrap")
CORRECTIONS: tuple[str, ...] = ("holm", "fdr_bh", "bonferroni", "none")
_CHUNK_ELEMS = 4_000_000  # entries of one (resamples x users) block: 32 MB as float64


@dataclass(frozen=True)
class PairedResult:
    """All paired statistics for one metric; ``diff = mean_a - mean_b``."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    rel_diff: float
    t_stat: float
    p_t: float
    w_stat: float
    p_wilcoxon: float
    p_perm: float
    p_bootstrap: float
    ci_low: float
    ci_high: float
    confidence: float
    cohen_d: float
    n_boot: int
    n_perm: int
    perm_exact: bool

    def p(self, test: str) -> float:
        """The raw p-value of one test: "t", "wilcoxon", "perm" or "bootstrap"."""
        _check_test(test)
        return {"t": self.p_t, "wilcoxon": self.p_wilcoxon, "perm": self.p_perm, "bootstrap": self.p_bootstrap}[test]


@dataclass(frozen=True)
class MetricComparison:
    """One row of a comparison table: the statistics of one metric plus the corrected p of the chosen test."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    rel_diff: float
    p_t: float
    p_wilcoxon: float
    p_perm: float
    p_bootstrap: float
    test: str
    p_value: float
    p_corrected: float
    correction: str
    alpha: float
    ci_low: float
    ci_high: float
    cohen_d: float
    significant: bool


@dataclass(frozen=True)
class SeedTest:
    """A test of mean(a) - mean(b) over training seeds; ``test`` is "paired-t" or "welch"."""

    test: str
    seeds: tuple[int, ...]
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    t_stat: float
    p_value: float


def _check_test(test: str) -> None:
    if test not in TESTS:
        raise BenchError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")


def _as_vector(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise BenchError(f"{name} must be a 1-D per-user vector, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise BenchError(f"{name} has {int((~np.isfinite(arr)).sum())} NaN or infinite per-user values")
    return arr


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for bootstrap and randomization, so changing n_boot does not change the perm test."""
    s_boot, s_perm = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(s_boot), np.random.default_rng(s_perm)


def _chunks(total: int, n: int) -> list[int]:
    size = max(1, _CHUNK_ELEMS // max(n, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def _bootstrap_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, M) means of d (n, M) over users resampled with replacement (same resamples for all columns)."""
    n = d.shape[0]
    out = np.empty((n_boot, d.shape[1]))
    row = 0
    for size in _chunks(n_boot, n):
        dtype = np.int32 if size * n < 2**31 else np.int64  # int32 draws are ~3x faster than int64
        idx = rng.integers(0, n, size=(size, n), dtype=dtype)
        idx += (np.arange(size, dtype=dtype) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        out[row : row + size] = counts @ d / n
        row += size
    return out


def _signflip_means(d: np.ndarray, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(B, M) means of d with each user's sign flipped at random; all 2**n flips when that is <= n_perm."""
    n = d.shape[0]
    total = d.sum(axis=0)
    if n < 63 and 2**n <= n_perm:  # exact: enumerate every sign vector
        codes = np.arange(2**n, dtype=np.int64)
        bits = ((codes[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(np.float64)
        return (total - 2.0 * (bits @ d)) / n, True
    out = np.empty((n_perm, d.shape[1]))
    row = 0
    for size in _chunks(n_perm, n):
        raw = rng.integers(0, 256, size=(size, (n + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(raw, axis=1, count=n).astype(np.float64)
        out[row : row + size] = (total - 2.0 * (bits @ d)) / n
        row += size
    return out, False


def _two_sided_count(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """#{|null| >= |observed|} per column, with a relative tolerance so that the identity resample always counts."""
    obs = np.abs(observed)
    gamma = 100 * np.finfo(np.float64).eps * obs
    return (np.abs(null) >= obs - gamma).sum(axis=0)


def _rounding_tol(*arrays: np.ndarray) -> float:
    """Size below which a spread or mean of differences is rounding noise for values of the arrays' magnitude:
    (x + 0.1) - x is not exactly 0.1 for every x, and treating that sd ~ 1e-17 as real would give p ~ 0 and
    d ~ 1e15."""
    scale = max((float(np.abs(x).max()) for x in arrays if x.size), default=0.0)
    return 64 * np.finfo(np.float64).eps * max(scale, np.finfo(np.float64).tiny)


def _is_constant(sd: float, *arrays: np.ndarray) -> bool:
    return not np.isfinite(sd) or sd <= _rounding_tol(*arrays)


def _ttest(d: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    sd = float(d.std(ddof=1))
    if _is_constant(sd, a, b):
        mean = float(d.mean())
        return (0.0, 1.0) if abs(mean) <= _rounding_tol(a, b) else (math.copysign(math.inf, mean), 0.0)
    res = sps.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def _wilcoxon(d: np.ndarray) -> tuple[float, float]:
    if not np.any(d != 0):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample normal-approximation notices
        res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    p = float(res.pvalue)
    return float(res.statistic), (1.0 if not np.isfinite(p) else p)


def _paired_batch(
    a: np.ndarray, b: np.ndarray, *, n_boot: int, n_perm: int, seed: int, confidence: float
) -> list[PairedResult]:
    """Paired statistics for every column of a and b (n users x M metrics) with shared resamples."""
    n, m = a.shape
    if n < 2:
        raise BenchError(f"paired tests need at least 2 users, got {n}")
    if n_boot < 1 or n_perm < 1:
        raise BenchError(f"n_boot and n_perm must be >= 1 (got {n_boot}, {n_perm})")
    if not 0 < confidence < 1:
        raise BenchError(f"confidence must be in (0, 1), got {confidence}")
    t0 = time.perf_counter()
    d = a - b
    mean_d = d.mean(axis=0)
    rng_boot, rng_perm = _rngs(seed)
    boot = _bootstrap_means(d, n_boot, rng_boot)
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    ci = np.quantile(boot, [lo_q, hi_q], axis=0)
    p_boot = (1 + _two_sided_count(boot - mean_d, mean_d)) / (n_boot + 1)
    flips, exact = _signflip_means(d, n_perm, rng_perm)
    hits = _two_sided_count(flips, mean_d)
    p_perm = hits / flips.shape[0] if exact else (1 + hits) / (n_perm + 1)
    log.debug("paired resampling: %d users x %d metrics, %d boot + %d perm in %.2fs",
              n, m, n_boot, n_perm, time.perf_counter() - t0)
    out = []
    for j in range(m):
        dj = d[:, j]
        mean_a, mean_b = float(a[:, j].mean()), float(b[:, j].mean())
        sd = float(dj.std(ddof=1))
        t_stat, p_t = _ttest(dj, a[:, j], b[:, j])
        w_stat, p_w = _wilcoxon(dj)
        out.append(
            PairedResult(
                n=n,
                mean_a=mean_a,
                mean_b=mean_b,
                diff=float(mean_d[j]),
                rel_diff=float(mean_d[j] / mean_b) if mean_b != 0 else math.nan,
                t_stat=t_stat,
                p_t=p_t,
                w_stat=w_stat,
                p_wilcoxon=p_w,
                p_perm=float(min(1.0, p_perm[j])),
                p_bootstrap=float(min(1.0, p_boot[j])),
                ci_low=float(ci[0, j]),
                ci_high=float(ci[1, j]),
                confidence=confidence,
                cohen_d=0.0 if _is_constant(sd, a[:, j], b[:, j]) else float(mean_d[j] / sd),
                n_boot=n_boot,
                n_perm=int(flips.shape[0]),
                perm_exact=exact,
            )
        )
    return out


def paired_tests(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_boot: int = 10_000,
    n_perm: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """All paired statistics for one metric; ``a[i]`` and ``b[i]`` are the same user's values, diff = a - b."""
    av, bv = _as_vector(a, "a"), _as_vector(b, "b")
    if av.shape != bv.shape:
        raise BenchError(f"per-user vectors differ in length ({len(av)} vs {len(bv)}); align them on user ids first")
    return _paired_batch(av[:, None], bv[:, None], n_boot=n_boot, n_perm=n_perm, seed=seed, confidence=confidence)[0]


def correct(pvalues: np.ndarray | list[float], method: str = "holm", alpha: float = 0.05) -> np.ndarray:
    """Multiple-testing corrected p-values (statsmodels ``multipletests``); "none" returns them unchanged."""
    if method not in CORRECTIONS:
        raise BenchError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise BenchError(f"p-values must lie in [0, 1], got {p.tolist()}")
    if method == "none" or p.size == 0:
        return p.copy()
    if method == "holm":
        # statsmodels' Holm branch calls gc.collect() on every call (~0.2 s in a large process), which made
        # marked leaderboards over many models slow; this is the same step-down formula, checked against
        # multipletests in tests/test_stats.py.
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate(p[order] * np.arange(p.size, 0, -1))
        out = np.empty_like(p)
        out[order] = np.minimum(stepped, 1.0)
        return out
    return np.asarray(multipletests(p, alpha=alpha, method=method)[1], dtype=np.float64)


def compare_metrics(
    per_user_a: dict[str, np.ndarray],
    per_user_b: dict[str, np.ndarray],
    metrics: list[str] | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    seed: int = 0,
    *,
    n_boot: int = 10_000,
    n_perm: int = 10_000,
    confidence: float = 0.95,
) -> list[MetricComparison]:
    """One row per metric comparing system a (under test) with b (baseline); the family for the correction is the
    set of metrics compared. ``significant`` is ``p_corrected < alpha`` for the chosen ``test``."""
    _check_test(test)
    if correction not in CORRECTIONS:
        raise BenchError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")
    if not 0 < alpha < 1:
        raise BenchError(f"alpha must be in (0, 1), got {alpha}")
    names = list(metrics) if metrics is not None else [k for k in per_user_a if k in per_user_b]
    if not names:
        raise BenchError("no metric to compare: the two systems share no metric names")
    for name in names:
        for side, d in (("a", per_user_a), ("b", per_user_b)):
            if name not in d:
                raise BenchError(f"metric {name!r} missing for system {side}; it has {sorted(d)}")
    vecs = {}
    for name in names:
        av, bv = _as_vector(per_user_a[name], f"{name} (a)"), _as_vector(per_user_b[name], f"{name} (b)")
        if av.shape != bv.shape:
            raise BenchError(f"metric {name!r}: per-user vectors differ in length ({len(av)} vs {len(bv)})")
        vecs[name] = (av, bv)
    # metrics with the same number of users share one vectorized batch
    results: dict[str, PairedResult] = {}
    for n in sorted({len(v[0]) for v in vecs.values()}):
        group = [k for k in names if len(vecs[k][0]) == n]
        a = np.column_stack([vecs[k][0] for k in group])
        b = np.column_stack([vecs[k][1] for k in group])
        for k, r in zip(group, _paired_batch(a, b, n_boot=n_boot, n_perm=n_perm, seed=seed, confidence=confidence)):
            results[k] = r
    raw = np.array([results[k].p(test) for k in names])
    adj = correct(raw, correction, alpha)
    rows = []
    for k, p_raw, p_adj in zip(names, raw, adj):
        r = results[k]
        rows.append(
            MetricComparison(
                metric=k, n=r.n, mean_a=r.mean_a, mean_b=r.mean_b, diff=r.diff, rel_diff=r.rel_diff,
                p_t=r.p_t, p_wilcoxon=r.p_wilcoxon, p_perm=r.p_perm, p_bootstrap=r.p_bootstrap,
                test=test, p_value=float(p_raw), p_corrected=float(p_adj), correction=correction, alpha=alpha,
                ci_low=r.ci_low, ci_high=r.ci_high, cohen_d=r.cohen_d, significant=bool(p_adj < alpha),
            )
        )
    return rows


def seed_summary(values: list[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean over training seeds and the half-width of its t-distribution confidence interval.

    With one seed the spread is unknown, so the half-width is NaN (not 0, which would claim certainty)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise BenchError("seed_summary needs at least one value")
    if not np.isfinite(v).all():
        raise BenchError(f"seed_summary got NaN or infinite values: {v.tolist()}")
    if not 0 < confidence < 1:
        raise BenchError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(v.mean())
    if v.size == 1:
        return mean, math.nan
    sd = float(v.std(ddof=1))
    if _is_constant(sd, v):
        return mean, 0.0
    sem = sd / math.sqrt(v.size)
    return mean, float(sps.t.ppf(0.5 + confidence / 2, df=v.size - 1) * sem)


def across_seed_test(
    a_by_seed: dict[int, float], b_by_seed: dict[int, float], *, allow_unpaired: bool = False
) -> SeedTest:
    """Test mean(a) - mean(b) over training seeds.

    Seeds present in both systems are paired (same seed, same data order) and tested with a paired t-test; at
    least 2 shared seeds are required. If fewer are shared, the call refuses (BenchError) unless
    ``allow_unpaired=True``, in which case Welch's unequal-variance t-test runs on all seeds of each side (each
    needing >= 2). Refusing is the default because silently switching tests would change what a p-value means."""
    shared = tuple(sorted(set(a_by_seed) & set(b_by_seed)))
    if len(shared) >= 2:
        a = np.array([a_by_seed[s] for s in shared], dtype=np.float64)
        b = np.array([b_by_seed[s] for s in shared], dtype=np.float64)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise BenchError("across_seed_test got NaN or infinite metric values")
        t_stat, p = _ttest(a - b, a, b)
        return SeedTest("paired-t", shared, len(a), len(b), float(a.mean()), float(b.mean()),
                        float(a.mean() - b.mean()), t_stat, p)
    if not allow_unpaired:
        raise BenchError(
            f"across-seed test needs >= 2 seeds run for both systems, found {len(shared)} shared "
            f"(a: {sorted(a_by_seed)}, b: {sorted(b_by_seed)}); run the missing seeds or pass allow_unpaired=True"
        )
    a = np.array(list(a_by_seed.values()), dtype=np.float64)
    b = np.array(list(b_by_seed.values()), dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise BenchError(f"Welch's t-test needs >= 2 seeds per system (a: {len(a)}, b: {len(b)})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise BenchError("across_seed_test got NaN or infinite metric values")
    if _is_constant(float(a.std(ddof=1)), a) and _is_constant(float(b.std(ddof=1)), b):
        diff = float(a.mean() - b.mean())
        t_stat, p = (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    else:
        res = sps.ttest_ind(a, b, equal_var=False)
        t_stat, p = float(res.statistic), float(res.pvalue)
    return SeedTest("welch", tuple(sorted(set(a_by_seed) | set(b_by_seed))), len(a), len(b),
                    float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), t_stat, p)

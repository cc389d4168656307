"""The metric engine: per-user HR@K, NDCG@K, Recall@K, MRR and AUC from a (users x candidates) score matrix.

Tie rule (documented, tested): a target tied with ``t`` negatives is placed uniformly at random among the
``t + 1`` tied positions, and every metric is the *expected value* under that placement, computed exactly
(no random draw). So ties never favour the target, candidate order never matters, a constant scorer gets
exactly the random-ranking value (HR@K = K / C), and AUC counts a tie as one half, as usual.

Everything derives from three counts per user: ``greater`` (negatives scored strictly above the target),
``ties`` (negatives scored equal to it) and ``n_neg`` (negatives). The target is at column 0 of the candidate
matrix; under full ranking a boolean ``mask`` removes the user's earlier items. With one target per user
(leave-one-out) Recall@K equals HR@K; both are reported because papers name either.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.suites.metric_names import (_CUTOFF_METRICS, MAX_CUTOFF, METRIC_NAMES,  # noqa: F401 - re-exported
                                            metric_names, parse_metric)


@dataclass(frozen=True)
class RankCounts:
    greater: np.ndarray  # int64 (U,)
    ties: np.ndarray  # int64 (U,)
    n_neg: np.ndarray  # int64 (U,)

    @staticmethod
    def concat(parts: list["RankCounts"]) -> "RankCounts":
        return RankCounts(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("greater", "ties", "n_neg")))


def rank_counts(scores: np.ndarray, mask: np.ndarray | None = None, target_col: int = 0) -> RankCounts:
    """Count negatives above and tied with the target in each row. ``mask[i, j]`` True removes candidate j."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise BenchError(f"score matrix must be 2-D (users x candidates), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).any(axis=1).sum())
        raise BenchError(f"score matrix has NaN or infinite values in {bad} user rows")
    target = scores[:, target_col : target_col + 1]
    valid = np.ones_like(scores, dtype=bool) if mask is None else ~np.asarray(mask, dtype=bool)
    valid[:, target_col] = False
    greater = ((scores > target) & valid).sum(axis=1)
    ties = ((scores == target) & valid).sum(axis=1)
    return RankCounts(greater.astype(np.int64), ties.astype(np.int64), valid.sum(axis=1).astype(np.int64))


def rank_counts_full(scores: np.ndarray, targets: np.ndarray, exclude: list[np.ndarray]) -> RankCounts:
    """Full ranking: ``scores[i, j]`` is item ``j + 1``; ``exclude[i]`` lists items to drop (earlier items of
    user i; the target itself is never dropped). Works on one chunk of users at a time (bounded memory)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).any(axis=1).sum())
        raise BenchError(f"score matrix has NaN or infinite values in {bad} user rows")
    rows = np.arange(len(targets))
    tcol = np.asarray(targets, dtype=np.int64) - 1
    target = scores[rows, tcol][:, None]
    valid = np.ones_like(scores, dtype=bool)
    for i, ex in enumerate(exclude):
        if len(ex):
            valid[i, np.asarray(ex, dtype=np.int64) - 1] = False
    valid[rows, tcol] = False
    greater = ((scores > target) & valid).sum(axis=1)
    ties = ((scores == target) & valid).sum(axis=1)
    return RankCounts(greater.astype(np.int64), ties.astype(np.int64), valid.sum(axis=1).astype(np.int64))


@lru_cache(maxsize=8)
def _cumulative(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums of DCG discounts 1/log2(r+1) and of 1/r for ranks 1..n (index r, with 0 at index 0)."""
    r = np.arange(1, n + 1, dtype=np.float64)
    dcg = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(r + 1.0))])
    harm = np.concatenate([[0.0], np.cumsum(1.0 / r)])
    return dcg, harm


def per_user_metrics(counts: RankCounts, names: list[str]) -> dict[str, np.ndarray]:
    """Per-user metric vectors (float64), each the exact expectation under the tie rule above."""
    g, t, n = counts.greater, counts.ties, counts.n_neg
    lo = g  # ranks g+1 .. g+t+1 are equally likely
    hi = g + t + 1
    dcg, harm = _cumulative(int(hi.max()) if len(hi) else 1)
    out: dict[str, np.ndarray] = {}
    for name in names:
        base, k = parse_metric(name)
        if base in ("hr", "recall"):
            out[name] = np.clip((k - lo) / (t + 1.0), 0.0, 1.0)
        elif base == "ndcg":
            out[name] = (dcg[np.minimum(hi, k)] - dcg[np.minimum(lo, k)]) / (t + 1.0)
        elif base == "mrr":
            out[name] = (harm[hi] - harm[lo]) / (t + 1.0)
        elif base == "auc":
            below = n - g - t
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = np.where(n > 0, (below + 0.5 * t) / np.maximum(n, 1), 0.5)
    return out


def evaluate_scores(scores: np.ndarray, names: list[str], mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Convenience: per-user metrics straight from a score matrix with the target in column 0."""
    return per_user_metrics(rank_counts(scores, mask), names)


def aggregate(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over users (the number a leaderboard shows)."""
    return {k: float(np.mean(v)) if len(v) else float("nan") for k, v in per_user.items()}

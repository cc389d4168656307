"""The metric vocabulary a suite may declare (``hr@10``, ``ndcg@5``, ``mrr``, ``auc``): names and cutoffs only.
It sits with the suite specs, which validate their metrics against it before any work; the metric engine
(:mod:`mmsr_bench.evaluation.metrics`) computes them."""

from __future__ import annotations

import re

from mmsr_bench.errors import BenchError

METRIC_NAMES = ("hr", "ndcg", "recall", "mrr", "auc")
_CUTOFF_METRICS = ("hr", "ndcg", "recall")

#: Largest cutoff K of a top-K metric (a longer list is not a top-K metric any more).
MAX_CUTOFF = 1000


def parse_metric(name: str) -> tuple[str, int | None]:
    """``"ndcg@10"`` -> ("ndcg", 10); ``"auc"`` -> ("auc", None). Raises with the known names on a typo."""
    m = re.fullmatch(r"([a-z]+)(?:@(\d+))?", name.strip().lower())
    if not m or m.group(1) not in METRIC_NAMES:
        raise BenchError(f"unknown metric {name!r}; known: hr@K, ndcg@K, recall@K, mrr, auc")
    base, k = m.group(1), m.group(2)
    if k is not None and not 1 <= int(k) <= MAX_CUTOFF:
        raise BenchError(f"metric {name!r}: the cutoff must be between 1 and {MAX_CUTOFF}")
    if base in _CUTOFF_METRICS and k is None:
        raise BenchError(f"metric {name!r} needs a cutoff, e.g. {base}@10")
    if base not in _CUTOFF_METRICS and k is not None:
        raise BenchError(f"metric {base} takes no cutoff (got {name!r})")
    return base, (int(k) if k else None)


def metric_names(metrics: tuple[str, ...] | list[str], cutoffs: tuple[int, ...] | list[int]) -> list[str]:
    """Expand suite metrics and cutoffs into names: hr,ndcg + (5,10) -> hr@5, hr@10, ndcg@5, ndcg@10."""
    out = []
    for m in metrics:
        if m in _CUTOFF_METRICS:
            out += [f"{m}@{k}" for k in cutoffs]
        else:
            out.append(m)
    return out

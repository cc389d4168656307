"""Ablations of a base model, computed once for both ``bench report ablations`` and the dashboard's Ablations
page, so the two can never disagree: every variant's relative change over the base per dataset and metric, with
the corrected paired per-user test of :func:`mmsr_bench.results.stats.compare_metrics` (the statistics of
:func:`mmsr_bench.results.significance.compare`), rendered through :mod:`mmsr_bench.results.tables`.

Variants are the untagged models sharing the base's family prefix (``mllm-srec-qlora`` -> ``mllm-srec-``), any
extra names given, and the base's own runs with a variant tag such as ``blank:0.2`` (shown as
``"<base> [blank:0.2]"``). The suite's runs are loaded once and the base's per-user vectors once per dataset.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from mmsr_bench.errors import BenchError
from mmsr_bench.results import stats, tables
from mmsr_bench.results.leaderboard import latest_runs
from mmsr_bench.results.significance import CORRECTION_NAMES, TEST_NAMES, check_comparable, check_options, seed_averaged
from mmsr_bench.results.store import Run, Store

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("hr@10", "ndcg@10", "mrr", "auc")
MAX_VARIANTS = 40


def family_prefix(base: str) -> str:
    """``mllm-srec-qlora`` -> ``mllm-srec-``: variants are the other models sharing the base's family prefix."""
    return base.rsplit("-", 1)[0] + "-" if "-" in base else base + "-"


@dataclass(frozen=True)
class AblationCell:
    dataset: str
    variant: str  # a model name, or "<base> [<variant tag>]"
    metric: str
    base_mean: float
    mean: float
    rel_change: float  # (mean - base_mean) / base_mean; nan where the base mean is 0
    p_corrected: float
    significant: bool

    @property
    def marker(self) -> str:
        """"+" significantly better than the base, "-" significantly worse, "" otherwise."""
        if not self.significant:
            return ""
        return "+" if self.mean > self.base_mean else "-"


@dataclass(frozen=True)
class Ablation:
    suite: str
    base: str
    metrics: tuple[str, ...]
    datasets: tuple[str, ...]  # datasets where the base has runs with the metrics
    base_means: tuple[tuple[str, str, float], ...]  # (dataset, metric, mean of the base's seed-averaged vector)
    cells: tuple[AblationCell, ...]
    notes: tuple[str, ...]  # variants left out and why
    test: str = "t"
    correction: str = "holm"
    alpha: float = 0.05

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(c.variant for c in self.cells))

    @property
    def footer(self) -> str:
        return (f"relative change over {self.base}; ▲/▼: significantly better/worse than {self.base} (two-sided "
                f"{TEST_NAMES[self.test]} on per-user values averaged over seeds, "
                f"{CORRECTION_NAMES[self.correction]} correction across metrics, alpha = {self.alpha})")


def compute(store: Store, suite: str, base: str, *, prefix: str | None = None, extra: tuple[str, ...] = (),
            datasets: list[str] | None = None, metrics: list[str] | None = None, test: str = "t",
            correction: str = "holm", alpha: float = 0.05, n_resamples: int = 2000,
            max_variants: int = MAX_VARIANTS) -> Ablation:
    """Every variant of ``base`` against it, per dataset and metric (see the module docstring for the variants).

    Per dataset the base's latest untagged run per seed is compared with each variant's (latest run per seed, by
    tag for tagged variants) after the comparability checks of ``bench compare``; a variant that cannot be
    compared is left out with a note. ``metrics`` default to those of :data:`DEFAULT_METRICS` the base has."""
    check_options(test, correction, alpha, n_resamples)
    runs = store.runs(suite=suite)
    base_all = [r for r in runs if r.model == base and r.variant == ""]
    if not base_all:
        raise BenchError(f"base {base!r}: no completed runs on suite {suite!r} in {store.url}; "
                         f"run `bench run --suite {suite} --model {base}` first")
    prefix = family_prefix(base) if prefix is None else prefix
    untagged = {r.model for r in runs if r.variant == ""}
    models = sorted(m for m in untagged if m != base and m.startswith(prefix))
    notes = []
    if len(models) > max_variants:
        notes.append(f"{len(models)} models start with {prefix!r}; the first {max_variants} are shown "
                     f"(narrow the prefix to see others)")
        models = models[:max_variants]
    models += [m for m in dict.fromkeys(extra) if m in untagged and m != base and m not in models]
    names = list(metrics or [m for m in DEFAULT_METRICS if m in base_all[0].metrics])
    ds = datasets or sorted({r.dataset for r in base_all})
    cells: list[AblationCell] = []
    base_means: list[tuple[str, str, float]] = []
    shown: list[str] = []
    for dataset in ds:
        here = [r for r in runs if r.dataset == dataset]
        base_runs = _resolve(here, base, "")
        ms = [m for m in names if base_runs and all(m in r.metrics for r in base_runs)]
        if not ms:
            continue
        shown.append(dataset)
        base_vecs = seed_averaged(store, base_runs, ms)
        base_means += [(dataset, m, float(base_vecs[m].mean())) for m in ms]
        jobs = [(m, _resolve(here, m, "")) for m in models]
        jobs += [(f"{base} [{tag}]", _resolve(here, base, tag))
                 for tag in sorted({r.variant for r in here if r.model == base and r.variant})]
        for label, var_runs in jobs:
            if not var_runs:
                continue
            try:
                check_comparable(var_runs, base_runs)
                rows = stats.compare_metrics(seed_averaged(store, var_runs, ms), base_vecs, ms, test=test,
                                             correction=correction, alpha=alpha, n_boot=n_resamples,
                                             n_perm=n_resamples)
            except BenchError as exc:
                log.warning("ablation %s vs %s on %s left out: %s", label, base, dataset, exc)
                notes.append(f"{label} on {dataset} left out: {exc}")
                continue
            cells += [AblationCell(dataset, label, r.metric, r.mean_b, r.mean_a,
                                   r.rel_diff if not math.isnan(r.rel_diff) else math.nan, r.p_corrected,
                                   r.significant) for r in rows]
    return Ablation(suite, base, tuple(names), tuple(shown), tuple(base_means), tuple(cells), tuple(notes),
                    test, correction, alpha)


def _resolve(runs: list[Run], model: str, variant: str) -> list[Run]:
    """significance.resolve on an already loaded list: the latest run per seed of ``model`` with tag ``variant``."""
    picked, _ = latest_runs([r for r in runs if r.model == model and r.variant == variant])
    return sorted(picked, key=lambda r: r.seed)


def build(store: Store, suite: str, base: str, *, datasets: list[str] | None = None,
          metrics: list[str] | None = None, test: str = "t", correction: str = "holm", alpha: float = 0.05,
          extra: tuple[str, ...] = (), n_resamples: int = 2000, prefix: str | None = None) -> Ablation:
    """``bench report ablations``: :func:`compute` with the report's defaults (the dashboard's, too)."""
    return compute(store, suite, base, prefix=prefix, extra=extra, datasets=datasets, metrics=metrics, test=test,
                   correction=correction, alpha=alpha, n_resamples=n_resamples)


# ---------------------------------------------------------------------------------------------------- rendering


def to_table(ab: Ablation, digits: int = 4) -> tables.Table:
    """One row per variant (the base first, its values without a change), one column group per dataset with one
    column per metric: "value (+x.x%)" and the significance marker; best and second value per column ranked."""
    cols = [(d, m) for d, m, _ in ab.base_means]
    by_key = {(c.variant, c.dataset, c.metric): c for c in ab.cells}
    base_row: list[tables.Cell | str] = [ab.base]
    means = {(d, m): v for d, m, v in ab.base_means}
    for key in cols:
        base_row.append(tables.Cell(f"{means[key]:.{digits}f}", means[key]))
    rows = [tuple(base_row)]
    for variant in ab.variants:
        row: list[tables.Cell | str] = [variant]
        for d, m in cols:
            c = by_key.get((variant, d, m))
            if c is None:
                row.append(tables.missing())
                continue
            rel = "n/a" if math.isnan(c.rel_change) else f"{c.rel_change:+.1%}"
            row.append(tables.Cell(f"{c.mean:.{digits}f} ({rel})", c.mean, c.marker))
        rows.append(tuple(row))
    groups: list[tuple[str, int]] = []
    for d, _ in cols:
        if groups and groups[-1][0] == d:
            groups[-1] = (d, groups[-1][1] + 1)
        else:
            groups.append((d, 1))
    footer = "\n".join([ab.footer, *ab.notes])
    table = tables.Table(("variant", *(m for _, m in cols)), tuple(rows),
                         title=f"Ablations of {ab.base} on {ab.suite}.", footer=footer, groups=tuple(groups))
    return tables.rank_columns(table)


def to_rows(ab: Ablation) -> tuple[list[str], list[list[str]]]:
    """Header and plain-text rows for the terminal table."""
    table = to_table(ab)
    return tables.flat_header(table), [[tables.plain_text(c) for c in row] for row in table.rows]


def to_markdown(ab: Ablation) -> str:
    return tables.to_markdown(to_table(ab))


def to_latex(ab: Ablation) -> str:
    return tables.to_latex(to_table(ab))

"""Leaderboard tables from the results store: one row per model, one column per (dataset, metric), mean over
seeds with a 95% confidence interval where several seeds exist (:func:`mmsr_bench.results.stats.seed_summary`, the one CI
of the harness). Exporters: markdown and latex through :mod:`mmsr_bench.results.tables`, csv and json as data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from mmsr_bench.results import tables
from mmsr_bench.results.latex import metric_label
from mmsr_bench.results.selection import NOT_CONVERGED_MARK, convergence_of
from mmsr_bench.results.stats import seed_summary
from mmsr_bench.results.store import Run, Store


@dataclass(frozen=True)
class Cell:
    mean: float
    half_width: float  # 95% CI half width across seeds (nan with one seed)
    n_seeds: int
    run_ids: tuple[int, ...]
    marker: str = ""  # significance marker against a reference model ("+" better, "-" worse)


@dataclass
class Board:
    suite: str
    datasets: list[str]
    metrics: list[str]
    models: list[str]
    cells: dict[tuple[str, str, str], Cell]  # (model, dataset, metric) -> cell
    notes: list[str] = field(default_factory=list)
    #: model -> how its configuration was chosen, for the rows of tuned models ("tuned (12 trials, 20.0 min, best
    #: trial 7)"); a model not in it runs its default configuration.
    tuning: dict[str, str] = field(default_factory=dict)
    #: model -> the (dataset, seed) runs of its row that stopped at their budget still improving on validation
    not_converged: dict[str, list[str]] = field(default_factory=dict)

    def label(self, model: str) -> str:
        """The row's name, with the footnote mark of a model whose row holds a run that did not converge."""
        return model + (NOT_CONVERGED_MARK if self.not_converged.get(model) else "")

    def row_notes(self) -> list[str]:
        """The notes the row marks need (a not-converged footnote, the tuned rows), before the board's own."""
        out = []
        if self.not_converged:
            parts = "; ".join(f"{m} ({', '.join(v)})" for m, v in sorted(self.not_converged.items()))
            out.append(f"{NOT_CONVERGED_MARK}: not converged: {parts}: stopped at the training budget while "
                       "validation was still improving, so the row is a lower bound of the model")
        if self.tuning:
            parts = "; ".join(f"{m}: {t}" for m, t in sorted(self.tuning.items()))
            out.append(f"tuned on validation (bench tune): {parts}; every other row runs its default "
                       "configuration")
        return out

    def value(self, model: str, dataset: str, metric: str) -> float:
        c = self.cells.get((model, dataset, metric))
        return c.mean if c else float("nan")


def summarize_seeds(values: list[float]) -> tuple[float, float]:
    """Mean and 95% CI half width across seeds (:func:`mmsr_bench.results.stats.seed_summary`, nan with one seed); a
    non-finite seed value makes the mean say so, with no CI, instead of failing the whole board."""
    if all(math.isfinite(v) for v in values):
        return seed_summary(values)
    return float(np.mean(values)), math.nan


CONFIGS = ("tuned", "default")


def latest_runs(runs: list[Run], configs: str = "tuned") -> tuple[list[Run], list[str]]:
    """The runs a row shows. Per dataset only the newest protocol fingerprint counts; per (model, dataset, variant)
    one configuration: the tuned one (``bench tune``, ``run_info.tuned_from``) when the model was tuned there, else
    the configuration of its newest run, so a row never averages seeds of different configurations; per seed the
    newest run of it. ``configs="default"`` leaves tuned runs out (the rows as the models' defaults give them).
    Notes say how many runs each rule left out."""
    if configs not in CONFIGS:
        from mmsr_bench.errors import BenchError

        raise BenchError(f"--configs {configs!r}: choose tuned (a tuned configuration where there is one) or default")
    if configs == "default":
        runs = [r for r in runs if not isinstance(r.run_info.get("tuned_from"), dict)]
    newest_hash: dict[str, tuple[int, str]] = {}
    for r in runs:
        if r.dataset not in newest_hash or r.id > newest_hash[r.dataset][0]:
            newest_hash[r.dataset] = (r.id, r.suite_hash)
    stale = [r for r in runs if r.suite_hash != newest_hash[r.dataset][1]]
    current = [r for r in runs if r.suite_hash == newest_hash[r.dataset][1]]
    cells: dict[tuple, list[Run]] = {}
    for r in current:
        cells.setdefault((r.model, r.dataset, r.variant), []).append(r)
    keep: dict[tuple, Run] = {}
    other_configs = 0
    for rs in cells.values():
        tuned = [r for r in rs if isinstance(r.run_info.get("tuned_from"), dict)]
        chosen = max(tuned or rs, key=lambda r: r.id).config_hash
        for r in rs:
            if r.config_hash != chosen:
                other_configs += 1
                continue
            key = (r.model, r.dataset, r.seed, r.variant)
            if key not in keep or r.id > keep[key].id:
                keep[key] = r
    notes = [f"{len(stale)} run(s) on an older version of the suite's artifacts were left out"] if stale else []
    if other_configs:
        notes.append(f"{other_configs} run(s) of other configurations of a shown model were left out (a row shows one "
                     "configuration: the tuned one where `bench tune` tuned the model, else its newest)")
    for w in sorted({w for r in keep.values() for w in r.run_info.get("data_quality_warnings", [])}):
        notes.append(f"data quality: {w}")
    return list(keep.values()), notes


def build_board(store: Store, suite: str, datasets: list[str] | None = None, metrics: list[str] | None = None,
                variant: str = "", configs: str = "tuned") -> Board:
    runs = [r for r in store.runs(suite=suite) if r.variant == variant]
    if datasets:
        runs = [r for r in runs if r.dataset in datasets]
    runs, notes = latest_runs(runs, configs)
    present = {r.dataset for r in runs}
    ds = [d for d in (datasets or _suite_order(suite, present)) if d in present]
    all_metrics = sorted({m for r in runs for m in r.metrics}, key=_metric_order)
    ms = [m for m in (metrics or all_metrics)]
    cells: dict[tuple[str, str, str], Cell] = {}
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.model, r.dataset), []).append(r)
    for (model, dataset), rs in groups.items():
        for m in ms:
            vals = [r.metrics[m] for r in rs if m in r.metrics]
            if vals:
                cells[(model, dataset, m)] = Cell(*summarize_seeds(vals), len(vals), tuple(r.id for r in rs))
    tuning, not_converged = row_facts([r for r in runs if r.dataset in ds])
    return Board(suite, ds, ms, _ranked(suite, sorted({r.model for r in runs}), cells, ds, ms), cells, notes,
                 tuning, not_converged)


def tuned_text(info: dict) -> str:
    """A run's ``tuned_from`` as a row fact: "tuned (12 trials, 20.0 min, best trial 7)"."""
    pruned = f", {info['pruned']} pruned" if info.get("pruned") else ""
    return (f"tuned ({info.get('trials', '?')} trials{pruned}, {float(info.get('minutes') or 0):.1f} min, best trial "
            f"{info.get('best_trial', '?')})")


def row_facts(runs: list[Run]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Per model: how its configuration was chosen (tuned rows only), and which of its runs did not converge."""
    tuned: dict[str, dict[str, str]] = {}
    datasets: dict[str, list[str]] = {}
    nc: dict[str, list[str]] = {}
    for r in sorted(runs, key=lambda r: (r.model, r.dataset, r.seed)):
        datasets.setdefault(r.model, [])
        if r.dataset not in datasets[r.model]:
            datasets[r.model].append(r.dataset)
        info = r.run_info.get("tuned_from")
        if isinstance(info, dict):
            tuned.setdefault(r.model, {})[r.dataset] = tuned_text(info)
        sel = convergence_of(r)
        if sel is not None and sel.converged is False:
            nc.setdefault(r.model, []).append(f"{r.dataset} seed {r.seed}")
    facts = {}
    for m, by_ds in tuned.items():
        parts = [f"{t} on {d}" for d, t in sorted(by_ds.items())]
        rest = [d for d in datasets[m] if d not in by_ds]
        facts[m] = "; ".join(parts + ([f"default on {', '.join(rest)}"] if rest else []))
    return facts, nc


def _ranked(suite: str, models: list[str], cells: dict, ds: list[str], ms: list[str]) -> list[str]:
    """Models by their mean of the primary metric over the datasets, best first; models without it last."""
    if not (ds and ms):
        return models
    key_metric = _primary_metric(suite, ms)
    return sorted(models, key=lambda mo: -np.nanmean([board_val(cells, mo, d, key_metric) for d in ds] or [np.nan])
                  if any((mo, d, key_metric) in cells for d in ds) else math.inf)


def merge_boards(local: Board | None, reference: Board | None, suffix: str) -> Board:
    """The local board and the reference board as one, reference rows named ``model + suffix`` (so that they are
    never read as more seeds of the local model), ranked together; each side keeps its own significance marks."""
    boards = [b for b in (local, reference) if b is not None]
    cells: dict[tuple[str, str, str], Cell] = dict(local.cells) if local else {}
    models = list(local.models) if local else []
    notes = list(local.notes) if local else []
    tuning = dict(local.tuning) if local else {}
    not_converged = dict(local.not_converged) if local else {}
    if reference is not None:
        cells.update({(m + suffix, d, k): c for (m, d, k), c in reference.cells.items()})
        models += [m + suffix for m in reference.models]
        notes += [f"reference runs: {n}" for n in reference.notes]
        tuning.update({m + suffix: t for m, t in reference.tuning.items()})
        not_converged.update({m + suffix: v for m, v in reference.not_converged.items()})
    suite = boards[0].suite
    order = _suite_order(suite, {d for b in boards for d in b.datasets})
    metrics = list(dict.fromkeys(m for b in boards for m in b.metrics))
    return Board(suite, order, metrics, _ranked(suite, models, cells, order, metrics), cells, notes, tuning,
                 not_converged)


def _primary_metric(suite: str, metrics: list[str]) -> str:
    """The metric rows are ranked by: the suite's primary metric (e.g. ndcg@10) when the board has it, else the
    first shown metric."""
    from mmsr_bench.errors import BenchError
    from mmsr_bench.suites.spec import load_suite

    try:
        primary = load_suite(suite).evaluation.primary
    except BenchError:
        primary = "ndcg@10"
    return primary if primary in metrics else metrics[0]


def _suite_order(suite: str, present: set[str]) -> list[str]:
    """Datasets in the suite spec's order where the spec is known, else alphabetical."""
    from mmsr_bench.errors import BenchError
    from mmsr_bench.suites.spec import load_suite

    try:
        order = [d.name for d in load_suite(suite).datasets]
    except BenchError:
        order = []
    return [d for d in order if d in present] + sorted(present - set(order))


def board_val(cells, model, dataset, metric) -> float:
    c = cells.get((model, dataset, metric))
    return c.mean if c else float("nan")


def _metric_order(name: str) -> tuple:
    base, _, k = name.partition("@")
    order = {"hr": 0, "recall": 1, "ndcg": 2, "mrr": 3, "auc": 4}
    return (order.get(base, 9), int(k) if k else 0)


def _value_text(c: Cell, digits: int = 4) -> str:
    s = f"{c.mean:.{digits}f}"
    if c.n_seeds > 1 and not math.isnan(c.half_width):
        s += f" ± {c.half_width:.{digits}f}"
    return s


def fmt_cell(c: Cell | None, digits: int = 4) -> str:
    """One cell as plain text ("mean ± ci ▲"), for the terminal and the dashboard."""
    if c is None:
        return tables.MISSING
    return tables.plain_text(_table_cell(c, digits))


def _table_cell(c: Cell | None, digits: int) -> tables.Cell:
    if c is None:
        return tables.missing()
    return tables.Cell(_value_text(c, digits), c.mean, c.marker)


def to_rows(board: Board, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    multi = len(board.datasets) > 1
    header = ["model"] + [f"{d}/{m}" if multi else m for d in board.datasets for m in board.metrics]
    tuned = bool(board.tuning)
    if tuned:
        header.insert(1, "config")
    rows = []
    for model in board.models:
        lead = [board.label(model)] + ([board.tuning.get(model, "default")] if tuned else [])
        rows.append(lead + [fmt_cell(board.cells.get((model, d, m)), digits)
                            for d in board.datasets for m in board.metrics])
    return header, rows


def board_table(board: Board, digits: int = 4, *, rank: bool = True, group_name: Callable[[str], str] = str,
                metric_name: Callable[[str], str] = str) -> tables.Table:
    """The board as a :class:`mmsr_bench.results.tables.Table`: one group of metric columns per dataset, best/second mean of
    each column ranked, the board's notes as the footer."""
    tuned = bool(board.tuning)
    lead = ("model", "config") if tuned else ("model",)
    rows = tuple((board.label(model), *((board.tuning.get(model, "default"),) if tuned else ()),
                  *(_table_cell(board.cells.get((model, d, m)), digits)
                    for d in board.datasets for m in board.metrics)) for model in board.models)
    table = tables.Table((*lead, *(metric_name(m) for _ in board.datasets for m in board.metrics)), rows,
                         footer="\n".join(board.row_notes() + board.notes),
                         groups=tuple((group_name(d), len(board.metrics)) for d in board.datasets), lead=len(lead))
    return tables.rank_columns(table) if rank else table


def to_markdown(board: Board, digits: int = 4, bold_best: bool = True) -> str:
    return tables.to_markdown(board_table(board, digits, rank=bold_best))


def to_csv(board: Board) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "dataset", "metric", "mean", "ci95_half_width", "n_seeds", "run_ids", "marker"])
    for model in board.models:
        for d in board.datasets:
            for m in board.metrics:
                c = board.cells.get((model, d, m))
                if c:
                    w.writerow([tables.csv_cell(model), tables.csv_cell(d), m, repr(c.mean),
                                "" if math.isnan(c.half_width) else repr(c.half_width), c.n_seeds,
                                " ".join(map(str, c.run_ids)), c.marker])
    return buf.getvalue()


def to_json(board: Board) -> str:
    return json.dumps({
        "suite": board.suite, "datasets": board.datasets, "metrics": board.metrics, "models": board.models,
        "notes": board.row_notes() + board.notes, "tuning": board.tuning, "not_converged": board.not_converged,
        "cells": [{"model": k[0], "dataset": k[1], "metric": k[2], "mean": c.mean,
                   "ci95_half_width": None if math.isnan(c.half_width) else c.half_width,
                   "n_seeds": c.n_seeds, "run_ids": list(c.run_ids), "marker": c.marker}
                  for k, c in board.cells.items()]}, indent=2)


def board_to_latex(board: Board, *, digits: int = 4, footer: str = "", caption: str | None = None,
                   label: str | None = None) -> str:
    """The leaderboard as a paper-ready booktabs table (one column group per dataset, best bold, second underlined,
    significance daggers); ``footer`` (the significance note) and the board's notes go in the
    caption."""
    table = board_table(board, digits, group_name=str.capitalize, metric_name=metric_label)
    notes = " ".join(n for n in [footer, *board.row_notes(), *board.notes] if n)
    table = replace(table, header=("Model", *table.header[1:]), title=caption or f"Results on {board.suite}.",
                    footer=notes)
    return tables.to_latex(table, label=label)

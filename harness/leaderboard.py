"""Leaderboard tables from the results store: one row per model, one column per (dataset, metric), mean over
seeds with a 95% confidence interval where several seeds exist. Exporters: markdown, csv, json, latex."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from harness.store import Run, Store


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

    def value(self, model: str, dataset: str, metric: str) -> float:
        c = self.cells.get((model, dataset, metric))
        return c.mean if c else float("nan")


def ci_half_width(values: list[float], confidence: float = 0.95) -> float:
    """Half width of the t-based confidence interval of the mean across seeds; nan for a single seed."""
    if len(values) < 2:
        return float("nan")
    sem = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return float(sps.t.ppf(0.5 + confidence / 2, len(values) - 1) * sem)


def latest_runs(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """Per (model, dataset, seed, variant) keep the newest run on the newest protocol fingerprint of that dataset;
    say how many stale runs (older fingerprint) were left out."""
    newest_hash: dict[str, tuple[int, str]] = {}
    for r in runs:
        if r.dataset not in newest_hash or r.id > newest_hash[r.dataset][0]:
            newest_hash[r.dataset] = (r.id, r.suite_hash)
    keep: dict[tuple, Run] = {}
    stale = 0
    for r in runs:
        if r.suite_hash != newest_hash[r.dataset][1]:
            stale += 1
            continue
        key = (r.model, r.dataset, r.seed, r.variant)
        if key not in keep or r.id > keep[key].id:
            keep[key] = r
    notes = [f"{stale} run(s) on an older version of the suite's artifacts were left out"] if stale else []
    for w in sorted({w for r in keep.values() for w in r.run_info.get("data_quality_warnings", [])}):
        notes.append(f"data quality: {w}")
    return list(keep.values()), notes


def build_board(store: Store, suite: str, datasets: list[str] | None = None, metrics: list[str] | None = None,
                variant: str = "") -> Board:
    runs = [r for r in store.runs(suite=suite) if r.variant == variant]
    if datasets:
        runs = [r for r in runs if r.dataset in datasets]
    runs, notes = latest_runs(runs)
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
                cells[(model, dataset, m)] = Cell(float(np.mean(vals)), ci_half_width(vals), len(vals),
                                                  tuple(r.id for r in rs))
    models = sorted({r.model for r in runs})
    if ds and ms:
        key_metric = _primary_metric(suite, ms)
        models.sort(key=lambda mo: -np.nanmean([board_val(cells, mo, d, key_metric) for d in ds] or [np.nan])
                    if any((mo, d, key_metric) in cells for d in ds) else math.inf)
    return Board(suite, ds, ms, models, cells, notes)


def _primary_metric(suite: str, metrics: list[str]) -> str:
    """The metric rows are ranked by: the suite's primary metric (e.g. ndcg@10) when the board has it, else the
    first shown metric."""
    from harness.errors import BenchError
    from harness.suites import load_suite

    try:
        primary = load_suite(suite).evaluation.primary
    except BenchError:
        primary = "ndcg@10"
    return primary if primary in metrics else metrics[0]


def _suite_order(suite: str, present: set[str]) -> list[str]:
    """Datasets in the suite spec's order where the spec is known, else alphabetical."""
    from harness.errors import BenchError
    from harness.suites import load_suite

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


def fmt_cell(c: Cell | None, digits: int = 4) -> str:
    if c is None:
        return "–"
    s = f"{c.mean:.{digits}f}"
    if c.n_seeds > 1 and not math.isnan(c.half_width):
        s += f" ± {c.half_width:.{digits}f}"
    return s + {"+": " ▲", "-": " ▼"}.get(c.marker, "")


def to_rows(board: Board, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    multi = len(board.datasets) > 1
    header = ["model"] + [f"{d}/{m}" if multi else m for d in board.datasets for m in board.metrics]
    rows = []
    for model in board.models:
        rows.append([model] + [fmt_cell(board.cells.get((model, d, m)), digits)
                               for d in board.datasets for m in board.metrics])
    return header, rows


def to_markdown(board: Board, digits: int = 4, bold_best: bool = True) -> str:
    header, rows = to_rows(board, digits)
    if bold_best:
        rows = _mark_best(board, rows, lambda s: f"**{s}**", lambda s: f"<u>{s}</u>")
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out + [""] + [f"_{n}_" for n in board.notes])


def _mark_best(board: Board, rows: list[list[str]], best, second) -> list[list[str]]:
    rows = [list(r) for r in rows]
    col = 1
    for d in board.datasets:
        for m in board.metrics:
            vals = [(board.value(mo, d, m), i) for i, mo in enumerate(board.models)]
            vals = sorted([v for v in vals if not math.isnan(v[0])], reverse=True)
            if vals:
                rows[vals[0][1]][col] = best(rows[vals[0][1]][col])
            if len(vals) > 1 and vals[1][0] < vals[0][0]:
                rows[vals[1][1]][col] = second(rows[vals[1][1]][col])
            col += 1
    return rows


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
                    w.writerow([model, d, m, repr(c.mean), "" if math.isnan(c.half_width) else repr(c.half_width),
                                c.n_seeds, " ".join(map(str, c.run_ids)), c.marker])
    return buf.getvalue()


def to_json(board: Board) -> str:
    return json.dumps({
        "suite": board.suite, "datasets": board.datasets, "metrics": board.metrics, "models": board.models,
        "notes": board.notes,
        "cells": [{"model": k[0], "dataset": k[1], "metric": k[2], "mean": c.mean,
                   "ci95_half_width": None if math.isnan(c.half_width) else c.half_width,
                   "n_seeds": c.n_seeds, "run_ids": list(c.run_ids), "marker": c.marker}
                  for k, c in board.cells.items()]}, indent=2)

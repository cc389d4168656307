"""Significance between stored runs: resolve run ids or model names, refuse incomparable runs, run the paired
tests of :mod:`mmsr_bench.results.stats`, and mark leaderboard cells against a reference model.

Several seeds: a user's metric is averaged over a system's seeds before the per-user paired tests (the seeds
are training repetitions on the same users), and where both systems have at least two shared seeds an
across-seed paired t-test on the seed means is reported as well.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.results import stats
from mmsr_bench.results.leaderboard import Board, _metric_order, latest_runs
from mmsr_bench.results.store import Run, Store

MARK_BETTER, MARK_WORSE = "+", "-"


@dataclass(frozen=True)
class Comparison:
    a_label: str
    b_label: str
    a_runs: tuple[int, ...]
    b_runs: tuple[int, ...]
    suite: str
    dataset: str
    n_users: int
    rows: list[stats.MetricComparison]
    seed_tests: dict[str, stats.SeedTest]

    def to_json(self) -> str:
        return json.dumps({
            "a": {"label": self.a_label, "runs": list(self.a_runs)},
            "b": {"label": self.b_label, "runs": list(self.b_runs)},
            "suite": self.suite, "dataset": self.dataset, "n_users": self.n_users,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "across_seeds": {k: dataclasses.asdict(v) for k, v in self.seed_tests.items()},
        }, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


TEST_NAMES = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test", "perm": "paired randomization test",
              "bootstrap": "paired bootstrap test"}
CORRECTION_NAMES = {"holm": "Holm-Bonferroni", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni",
                    "none": "no"}


def resolve(store: Store, ref: str, suite: str | None, dataset: str | None) -> list[Run]:
    """A run id ("12"), a run's uuid or its first 8+ hex digits (the same run in every store: what generated
    docs cite), or a model name resolved to one configuration (:func:`mmsr_bench.results.leaderboard.latest_runs`:
    the tuned one where there is one, else the newest) and its latest run per seed on ``suite``/``dataset``."""
    if ref.isdigit():
        return [store.run(int(ref))]
    if re.fullmatch(r"[0-9a-f]{8,32}", ref):
        hits = [r for r in store.runs(status=None) if r.uuid.startswith(ref)]
        if len(hits) > 1:
            raise BenchError(f"{ref!r} is the start of {len(hits)} run uuids in {store.url}; give more of it")
        if hits:
            return hits
    if not suite or not dataset:
        raise BenchError(f"{ref!r} is a model name: give --suite and --dataset to pick its runs")
    runs = [r for r in store.runs(suite=suite, dataset=dataset, model=ref) if r.variant == ""]
    runs, _ = latest_runs(runs)
    if not runs:
        raise BenchError(f"no completed runs of model {ref!r} on {suite}/{dataset} in {store.url}")
    return sorted(runs, key=lambda r: r.seed)


def check_comparable(a: list[Run], b: list[Run]) -> None:
    """Refuse to pair runs evaluated on different suites, artifacts or evaluation users."""
    for side in (a, b):
        for r in side[1:]:
            if (r.suite_hash, r.eval_users_hash) != (side[0].suite_hash, side[0].eval_users_hash):
                raise BenchError(f"runs {side[0].id} and {r.id} were evaluated on different suite artifacts")
    ra, rb = a[0], b[0]
    if (ra.suite, ra.dataset) != (rb.suite, rb.dataset):
        raise BenchError(f"cannot compare run {ra.id} ({ra.suite}/{ra.dataset}) with run {rb.id} "
                         f"({rb.suite}/{rb.dataset}): different suite or dataset")
    if ra.suite_hash != rb.suite_hash:
        raise BenchError(f"cannot compare run {ra.id} with run {rb.id}: their suite hashes differ (the frozen "
                         f"artifacts or protocol changed between them); re-run one of them")
    if ra.eval_users_hash != rb.eval_users_hash or ra.n_users != rb.n_users:
        raise BenchError(f"cannot compare run {ra.id} with run {rb.id}: they were evaluated on different users")


#: The most bootstrap/randomization resamples a comparison may ask for (10^6 resamples of 10^5 users is already
#: minutes and gigabytes; 10^12 tried to allocate 102 TiB).
MAX_RESAMPLES = 1_000_000


def check_options(test: str, correction: str, alpha: float, n_resamples: int = 10_000) -> None:
    """Validate the statistics options before any store access (each error names its option)."""
    if test not in stats.TESTS:
        raise BenchError(f"--test {test!r}: choose one of {', '.join(stats.TESTS)}")
    if correction not in stats.CORRECTIONS:
        raise BenchError(f"--correction {correction!r}: choose one of {', '.join(stats.CORRECTIONS)}")
    if not 0.0 < alpha < 1.0:
        raise BenchError(f"--alpha {alpha}: must be between 0 and 1 (exclusive)")
    if not 1 <= n_resamples <= MAX_RESAMPLES:
        raise BenchError(f"--resamples {str(n_resamples)[:30]}: give 1 to {MAX_RESAMPLES:,} (each resample holds a "
                         "vector of every user in memory)")


def seed_averaged(store: Store, runs: list[Run], metrics: list[str] | None = None) -> dict[str, np.ndarray]:
    vecs = [store.per_user(r.id, metrics) for r in runs]
    return {k: np.mean([v[k] for v in vecs], axis=0) for k in vecs[0]}


def compare(store: Store, a_ref: str, b_ref: str, *, suite: str | None = None, dataset: str | None = None,
            metrics: list[str] | None = None, test: str = "t", correction: str = "holm", alpha: float = 0.05,
            seed: int = 0, n_resamples: int = 10_000) -> Comparison:
    check_options(test, correction, alpha, n_resamples)
    a = resolve(store, a_ref, suite, dataset)
    b = resolve(store, b_ref, suite, dataset)
    if {r.id for r in a} == {r.id for r in b}:
        raise BenchError(f"{a_ref!r} and {b_ref!r} are the same runs {sorted(r.id for r in a)}: nothing to compare")
    check_comparable(a, b)
    va, vb = seed_averaged(store, a, metrics), seed_averaged(store, b, metrics)
    names = metrics or sorted((m for m in va if m in vb), key=_metric_order)
    rows = stats.compare_metrics(va, vb, names, test=test, correction=correction, alpha=alpha, seed=seed,
                                 n_boot=n_resamples, n_perm=n_resamples)
    seed_tests = {}
    shared = {r.seed for r in a} & {r.seed for r in b}
    if len(shared) >= 2:
        for m in names:
            seed_tests[m] = stats.across_seed_test({r.seed: r.metrics[m] for r in a}, {r.seed: r.metrics[m] for r in b})
    label = lambda ref, rs: (f"{rs[0].model} (run {ref})" if ref.isdigit() or rs[0].uuid.startswith(ref)  # noqa: E731
                             else ref)
    return Comparison(label(a_ref, a), label(b_ref, b), tuple(r.id for r in a), tuple(r.id for r in b), a[0].suite,
                      a[0].dataset, a[0].n_users, rows, seed_tests)


def mark_board(store: Store, board: Board, against: str, *, alpha: float = 0.05, test: str = "t",
               correction: str = "holm") -> str:
    """Mark each cell significantly better (+) or worse (-) than ``against`` on the same dataset; the family for
    the correction is the board's metrics of one model on one dataset. Returns the footer naming the test."""
    if against not in board.models:
        raise BenchError(f"--against {against!r}: no runs of that model on suite {board.suite!r} "
                         f"(models: {', '.join(board.models)})")
    for dataset in board.datasets:
        ref_cell = board.cells.get((against, dataset, board.metrics[0]))
        if ref_cell is None:
            continue
        ref_runs = [store.run(i) for i in ref_cell.run_ids]
        ref_vecs = seed_averaged(store, ref_runs, board.metrics)
        for model in board.models:
            if model == against:
                continue
            cell = board.cells.get((model, dataset, board.metrics[0]))
            if cell is None:
                continue
            runs = [store.run(i) for i in cell.run_ids]
            check_comparable(runs, ref_runs)
            rows = stats.compare_metrics(seed_averaged(store, runs, board.metrics), ref_vecs, board.metrics,
                                         test=test, correction=correction, alpha=alpha, n_boot=2000, n_perm=2000)
            for row in rows:
                key = (model, dataset, row.metric)
                if row.significant and key in board.cells:
                    mark = MARK_BETTER if row.diff > 0 else MARK_WORSE
                    board.cells[key] = dataclasses.replace(board.cells[key], marker=mark)
    return (f"▲/▼: significantly better/worse than {against} (two-sided {TEST_NAMES[test]} on per-user values, "
            f"{CORRECTION_NAMES[correction]} correction across metrics, alpha = {alpha})")

"""Planning and running the MLLM-SRec study's grid (:mod:`mmsr_bench.results.study` defines it and builds its tables):
which (model, dataset, seed) cells the store already holds, with an estimate for the missing ones, and running only
those through :mod:`mmsr_bench.runner.execute` (its ``--resume`` rule decides what is stored)."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass

import numpy as np

from mmsr_bench.results.study import (StudyOptions, cannot_run, current_fingerprint, expected_config_hash,
                                      open_for_reading, overrides_for)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ plan
@dataclass(frozen=True)
class _Data:
    """What :func:`mmsr_bench.runner.execute.stored_cell` reads of a loaded dataset, without loading it."""

    suite: object
    dataset: str
    fingerprint: str


@dataclass(frozen=True)
class PlanCell:
    model: str
    dataset: str
    seed: int
    rqs: tuple[str, ...]
    run_id: int | None  # the stored run, None when missing
    estimate_s: float | None = None  # for a missing cell: fit + score seconds of stored runs, None when unknown
    estimate_from: str = ""  # which runs the estimate comes from
    #: why the cell cannot run on this suite's data (an input the model needs and the dataset lacks); "" when it can
    #: or when the cell is stored
    cannot_run: str = ""

    @property
    def stored(self) -> bool:
        return self.run_id is not None

    @property
    def to_run(self) -> bool:
        """Not stored, and runnable on this suite's data."""
        return not self.stored and not self.cannot_run


@dataclass(frozen=True)
class Plan:
    suite: str
    budget: str
    fingerprints: dict  # dataset -> fingerprint (None when the suite is neither frozen nor built)
    cells: tuple[PlanCell, ...]

    @property
    def missing(self) -> list[PlanCell]:
        """Cells to run: not stored, and runnable on this suite's data."""
        return [c for c in self.cells if c.to_run]

    @property
    def unrunnable(self) -> list[PlanCell]:
        """Cells whose model needs an input the dataset lacks: never run, never estimated."""
        return [c for c in self.cells if c.cannot_run]

    @property
    def stored(self) -> list[PlanCell]:
        return [c for c in self.cells if c.stored]

    def estimate(self) -> tuple[float, int]:
        """Estimated seconds of the missing cells with an estimate, and how many missing cells have none."""
        known = [c.estimate_s for c in self.missing if c.estimate_s is not None]
        return float(sum(known)), len(self.missing) - len(known)

    def to_dict(self) -> dict:
        seconds, unknown = self.estimate()
        return {"suite": self.suite, "budget": self.budget, "fingerprints": self.fingerprints,
                "stored": len(self.stored), "missing": len(self.missing), "cannot_run": len(self.unrunnable),
                "estimate_seconds": seconds,
                "estimate_unknown_cells": unknown, "cells": [dataclasses.asdict(c) for c in self.cells]}


def _estimate(runs: list, model: str, dataset: str, cfg_hash: str) -> tuple[float | None, str]:
    """Mean fit + score seconds of completed runs of ``model`` on the suite: the same dataset and configuration
    first, then the same configuration on any dataset, then any configuration; None when there are none."""
    mine = [r for r in runs if r.model == model]
    for pick, label in (([r for r in mine if r.dataset == dataset and r.config_hash == cfg_hash], "same dataset"),
                        ([r for r in mine if r.config_hash == cfg_hash], "other datasets"),
                        (mine, "other configurations")):
        if pick:
            return float(np.mean([r.fit_seconds + r.score_seconds for r in pick])), f"{label}, {len(pick)} run(s)"
    return None, "unknown"


def plan(opts: StudyOptions) -> Plan:
    """Which cells of the grid are stored (same suite fingerprint, configuration hash, seed), which are missing,
    with an estimated time for the missing ones, and which cannot run on this suite's data (and why)."""
    from mmsr_bench.runner import execute as runner

    store = open_for_reading(opts.db)
    spec = opts.spec
    all_runs = store.runs(suite=spec.name) if store is not None else []
    fps = {d: current_fingerprint(spec, d) for d in opts.datasets}
    cells = []
    for m in opts.models:
        cfg = expected_config_hash(m, opts.budget, opts.sets)
        req = runner.RunRequest(spec, m, list(opts.datasets), list(opts.seeds),
                                overrides_for(m, opts.budget, opts.sets), opts.db)
        rqs = tuple(k for k in opts.rqs if m in opts.study.rqs[k].models)
        for d in opts.datasets:
            why = cannot_run(m, opts.budget, opts.sets, spec, d)
            for s in opts.seeds:
                done = None
                if store is not None and fps[d] is not None:
                    done = runner.stored_cell(store, req, _Data(spec, d, fps[d]), s, cfg)
                est, src = ((None, "") if done or why
                            else _estimate([r for r in all_runs if r.variant == ""], m, d, cfg))
                cells.append(PlanCell(m, d, s, rqs, done.id if done else None, est, src, "" if done else why))
    return Plan(spec.name, opts.budget, fps, tuple(cells))


@dataclass(frozen=True)
class RunOutcome:
    model: str
    run_ids: tuple[int, ...]
    error: str = ""


def run_missing(opts: StudyOptions, current: Plan | None = None, on_result=None) -> list[RunOutcome]:
    """Run the missing cells through :func:`mmsr_bench.runner.execute.execute` with ``resume`` (the runner skips stored
    cells itself); cells that cannot run on this suite's data are left out (the plan says why). One model failing
    (a crash) is recorded and the others go on."""
    from mmsr_bench.runner import execute as runner

    current = current or plan(opts)
    out = []
    for m in opts.models:
        # checked again here: an earlier model's run may have built a dataset the plan could not yet look into
        todo = [c for c in current.missing
                if c.model == m and not cannot_run(m, opts.budget, opts.sets, opts.spec, c.dataset)]
        if not todo:
            continue
        datasets = [d for d in opts.datasets if any(c.dataset == d for c in todo)]
        seeds = [s for s in opts.seeds if any(c.seed == s for c in todo)]
        tuned = dict(opts.tuned_from).get(m)
        req = runner.RunRequest(opts.spec, m, datasets, seeds, overrides_for(m, opts.budget, opts.sets), opts.db,
                                opts.device, resume=True, tuned_from=json.loads(tuned) if tuned else None)
        try:
            runs = runner.execute(req, on_result=on_result)
            out.append(RunOutcome(m, tuple(r.id for r in runs)))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one model's failure is reported, the study goes on
            log.error("study: %s failed: %s", m, exc)
            out.append(RunOutcome(m, (), f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
    return out

"""Sweeps that outgrow one machine: plan (suite, dataset, model, config hash, seed, variant) cells, run each cell as
an idempotent task on an executor (local processes or a Ray cluster), skip cells already stored, retry failures a
bounded number of times and record what finally failed.

Who writes: each worker writes its own run through ``Store.add_run`` (one transaction per run, per-user vectors
included). A worker killed mid-cell therefore leaves nothing half-written, the driver never has to ship per-user
vectors over the wire, and a crashed driver loses no finished cell. The driver only writes a ``failed`` record for a
cell whose worker died without writing one, and ``interrupted`` records for cells in flight at Ctrl-C.

Workers build and verify suites in their own ``$MMSR_BENCH_HOME``; ``build.load`` refuses artifacts that differ from
the frozen hashes, and a worker whose protocol fingerprint differs from the driver's refuses the cell."""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import platform
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Protocol

from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Cell:
    suite_ref: str  # suite name or TOML path, as the driver loaded it (workers load the same)
    suite: str
    fingerprint: str  # the driver's protocol fingerprint: a worker's must match
    dataset: str
    model: str
    overrides: tuple[tuple[str, str], ...]
    config_hash: str
    seed: int
    variant: str = ""
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    device: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.dataset}/seed{self.seed}" + (f"[{self.variant}]" if self.variant else "")


@dataclass
class CellState:
    cell: Cell
    status: str = "pending"  # pending | running | done | failed | skipped | interrupted
    attempts: int = 0
    run_id: int | None = None
    error: str = ""
    started: float | None = None
    seconds: float = 0.0


@dataclass
class SweepRequest:
    suite: str
    models: list[str]
    datasets: list[str] | None
    seeds: list[int]
    overrides: dict[str, str] = field(default_factory=dict)
    db_url: str | None = None
    executor: str = "local"
    address: str | None = None
    workers: int | None = None
    retries: int = 1
    num_cpus: float | None = None
    num_gpus: float | None = None
    device: str | None = None


def wants_gpu(model: str) -> bool:
    """Whether a model's adapter trains on a GPU when there is one (derived from the adapter registry: adapters
    that use torch want one, numpy baselines do not)."""
    from mmsr_bench.models import adapter as adapter_mod

    return bool(getattr(adapter_mod.get(model).cls, "uses_torch", False))


def validate(req: SweepRequest) -> None:
    """Every argument checked before any work; nothing reaches the store on bad input."""
    if not req.models:
        raise BenchError("--model: give one or more model names")
    from mmsr_bench.evaluation.scoring import check_seeds

    check_seeds(req.seeds)
    if req.executor not in ("local", "ray"):
        raise BenchError(f"--executor {req.executor!r}: choose local or ray")
    if req.address and req.executor != "ray":
        raise BenchError("--address is only meaningful with --executor ray")
    if req.workers is not None and req.workers < 1:
        raise BenchError(f"--workers {req.workers}: give a positive number of workers")
    if req.retries < 0:
        raise BenchError(f"--retries {req.retries}: give 0 or more retries")
    for name, v in (("--num-cpus", req.num_cpus), ("--num-gpus", req.num_gpus)):
        if v is not None and v < 0:
            raise BenchError(f"{name} {v}: give a non-negative number")


def plan(req: SweepRequest) -> list[Cell]:
    """Validate, verify every dataset once on the driver, and list the cells."""
    from mmsr_bench.models import adapter as adapter_mod
    from mmsr_bench.paths import check_device
    from mmsr_bench.results.store import check_store
    from mmsr_bench.runner import execute as runner
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    validate(req)
    check_device(req.device)
    spec = suites.load_suite(req.suite)
    names = [d.name for d in spec.select(req.datasets)]
    for m in req.models:
        adapter_mod.get(m)  # an unknown model first, with its suggestions
    per_model = adapter_mod.resolve_sets(list(req.models), req.overrides)  # the one --set grammar (scoped pairs)
    plans = {m: adapter_mod.plan(m, per_model[m]) for m in req.models}  # a bad value fails here
    check_store(req.db_url)
    if req.executor == "ray":
        import_ray()  # before any store is opened
    fps = {name: build.load(spec, name).fingerprint for name in names}
    seeds = list(dict.fromkeys(req.seeds))
    cells = []
    for m in req.models:
        gpu = req.num_gpus if req.num_gpus is not None else (1.0 if wants_gpu(m) else 0.0)
        for name in names:
            for seed in seeds:
                cells.append(Cell(req.suite, spec.name, fps[name], name, m, tuple(sorted(per_model[m].items())),
                                  plans[m].config_hash, seed, "", req.num_cpus or 1.0, gpu, req.device))
    return cells


def stored(store, cell: Cell):
    """The completed run of this cell already in the store, if any."""
    return store.completed_cell(suite=cell.suite, fingerprint=cell.fingerprint, dataset=cell.dataset,
                                model=cell.model, variant=cell.variant, seed=cell.seed, config_hash=cell.config_hash)


def run_cell(cell: Cell, db_url: str | None, group_id: str) -> dict:
    """The task a worker runs: verify the suite in this worker's home, skip if stored, fit, score, store."""
    from mmsr_bench.results.store import Store
    from mmsr_bench.runner import execute as runner
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    spec = suites.load_suite(cell.suite_ref)
    data = build.load(spec, cell.dataset)  # raises HashMismatch when this worker's artifacts differ
    if data.fingerprint != cell.fingerprint:
        raise BenchError(f"cell {cell.key}: this worker's {cell.suite}/{cell.dataset} has protocol fingerprint "
                         f"{data.fingerprint[:12]}, the driver's is {cell.fingerprint[:12]}; refusing the cell")
    store = Store(db_url)
    done = stored(store, cell)
    if done is not None:
        return {"run_id": done.id, "skipped": True, "host": platform.node()}
    store.check_writable()  # before the fit, not after it
    if wants_gpu(cell.model):  # torch adapters: as many threads as CPUs the cell reserved (no oversubscription);
        import torch  # the run records its thread count, which the numbers depend on

        torch.set_num_threads(max(1, int(cell.num_cpus)))
    req = runner.RunRequest(spec, cell.model, [cell.dataset], [cell.seed], dict(cell.overrides), db_url,
                            cell.device, variant=cell.variant)
    runs = runner.run_one(req, data, cell.seed, group_id, store)
    if runs[0].config_hash != cell.config_hash:
        raise BenchError(f"cell {cell.key}: worker built config hash {runs[0].config_hash[:12]}, driver "
                         f"{cell.config_hash[:12]}")
    return {"run_id": runs[0].id, "skipped": False, "host": platform.node()}


def _worker_init() -> None:
    """Worker processes leave Ctrl-C to the driver (which records in-flight cells as interrupted)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Executor(Protocol):
    def submit(self, cell: Cell, db_url: str | None, group_id: str) -> cf.Future: ...

    def shutdown(self, cancel: bool = False) -> None: ...


class LocalExecutor:
    """Worker processes on this machine (spawned, so each imports only what its cell needs). A dead worker breaks
    the pool: its futures fail with BrokenProcessPool and the pool is rebuilt for the next submissions."""

    def __init__(self, workers: int | None = None, task: Callable = None) -> None:
        import os

        self.workers = workers or max(1, os.cpu_count() or 1)
        self.task = task or run_cell  # a module-level callable with run_cell's signature (tests inject faults)
        self._pool = self._new()

    def _new(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init)

    def submit(self, cell: Cell, db_url: str | None, group_id: str) -> cf.Future:
        try:
            return self._pool.submit(self.task, cell, db_url, group_id)
        except cf.process.BrokenProcessPool:
            log.warning("a worker process died; starting a new pool")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new()
            return self._pool.submit(self.task, cell, db_url, group_id)

    def worker_pids(self) -> list[int]:
        return list(getattr(self._pool, "_processes", {}) or {})

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:  # in-flight cells were recorded as interrupted: their workers must not write a run later
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def import_ray():
    """Ray, imported only when a sweep asks for it; a clear error when it cannot be imported."""
    try:
        import ray
    except ImportError as exc:
        raise BenchError(f"--executor ray: Ray cannot be imported ({type(exc).__name__}: {exc}); ray 2.6.3 needs "
                         f"setuptools<81 for pkg_resources (see the README on sweeps)") from exc
    return ray


class RayExecutor:
    """Ray tasks with the cell's declared resources (num_cpus, num_gpus); ``address`` joins a running cluster
    ("auto" or HOST:PORT), None starts a local one with ``workers`` CPUs. Ray is imported only here."""

    def __init__(self, address: str | None = None, workers: int | None = None, task: Callable = None) -> None:
        self.ray = ray = import_ray()
        if not ray.is_initialized():
            kw = {"address": address} if address else {"num_cpus": workers}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
        # max_retries=0: the sweep, not Ray, decides how often a cell whose worker died is retried
        self._remote = ray.remote(max_retries=0)(task or run_cell)
        self._refs: list = []

    def submit(self, cell: Cell, db_url: str | None, group_id: str) -> cf.Future:
        ref = self._remote.options(num_cpus=cell.num_cpus, num_gpus=cell.num_gpus).remote(cell, db_url, group_id)
        self._refs.append(ref)
        return ref.future()

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:  # stop in-flight tasks (recorded as interrupted) so that none writes a run later
            for ref in self._refs:
                self.ray.cancel(ref, force=True)
        self._refs = []


def make_executor(req: SweepRequest) -> Executor:
    if req.executor == "ray":
        return RayExecutor(req.address, req.workers)
    return LocalExecutor(req.workers)


def _driver_record(store, cell: Cell, group_id: str, status: str, error: str, seconds: float) -> int:
    from mmsr_bench.results.store import Run

    run = Run(group_id=group_id, suite=cell.suite, suite_hash=cell.fingerprint, dataset=cell.dataset,
              model=cell.model, variant=cell.variant, config_json=json.dumps(dict(cell.overrides)),
              config_hash=cell.config_hash, seed=cell.seed, host=platform.node(), status=status,
              finished_at=datetime.now(timezone.utc), error=error[:2000], fit_seconds=seconds,
              run_info_json=json.dumps({"recorded_by": "sweep driver"}))
    return store.add_run(run).id


def sweep(req: SweepRequest, *, executor: Executor | None = None,
          on_update: Callable[[list[CellState]], None] | None = None, cells: list[Cell] | None = None,
          poll: float = 0.2) -> list[CellState]:
    """Run every planned cell once: stored cells are skipped, failures retried up to ``req.retries`` times, then
    recorded as failed; the others go on. KeyboardInterrupt stops scheduling, records in-flight cells as
    interrupted and re-raises."""
    from mmsr_bench.results.store import Store

    cells = cells if cells is not None else plan(req)
    store = Store(req.db_url)
    states = [CellState(c) for c in cells]
    for st in states:
        done = stored(store, st.cell)
        if done is not None:
            st.status, st.run_id = "skipped", done.id
    pending = [st for st in states if st.status == "pending"]
    if not pending:
        if on_update:
            on_update(states)
        return states
    store.check_writable()
    ex = executor or make_executor(req)
    group_id = uuid.uuid4().hex[:12]
    limit = getattr(ex, "workers", None) or req.workers or len(pending)
    queue = list(pending)
    running: dict[cf.Future, CellState] = {}

    def launch() -> None:
        while queue and len(running) < limit:
            st = queue.pop(0)
            st.status, st.started = "running", time.perf_counter()
            st.attempts += 1
            running[ex.submit(st.cell, req.db_url, group_id)] = st

    try:
        launch()
        if on_update:
            on_update(states)
        while running:
            finished, _ = cf.wait(list(running), timeout=poll, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                st = running.pop(fut)
                st.seconds = time.perf_counter() - (st.started or time.perf_counter())
                try:
                    res = fut.result()
                except Exception as exc:  # noqa: BLE001 - a cell's failure is recorded, the sweep goes on
                    st.error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, BenchError) and "refusing the cell" in str(exc):
                        st.attempts = req.retries + 1  # a refusal is not transient
                    if st.attempts <= req.retries:
                        log.warning("cell %s failed (attempt %d of %d): %s; retrying", st.cell.key, st.attempts,
                                    req.retries + 1, st.error)
                        st.status = "pending"
                        queue.append(st)
                    else:
                        log.error("cell %s failed after %d attempts: %s", st.cell.key, st.attempts, st.error)
                        st.status = "failed"
                        # the worker's run_one records its own failure; a dead worker wrote nothing
                        mine = [r for r in store.runs(suite=st.cell.suite, dataset=st.cell.dataset,
                                                      model=st.cell.model, status="failed", variant=st.cell.variant)
                                if r.group_id == group_id and r.seed == st.cell.seed]
                        st.run_id = mine[-1].id if mine else _driver_record(store, st.cell, group_id, "failed",
                                                                            st.error, st.seconds)
                else:
                    st.status = "skipped" if res["skipped"] else "done"
                    st.run_id = res["run_id"]
            launch()
            if on_update:
                on_update(states)
    except KeyboardInterrupt:
        for fut, st in running.items():
            fut.cancel()
            st.status, st.error = "interrupted", "KeyboardInterrupt: sweep stopped"
            st.seconds = time.perf_counter() - (st.started or time.perf_counter())
            st.run_id = _driver_record(store, st.cell, group_id, "interrupted", st.error, st.seconds)
        ex.shutdown(cancel=True)
        if on_update:
            on_update(states)
        raise
    ex.shutdown()
    return states

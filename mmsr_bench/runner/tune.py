"""``bench tune``: every model tuned on the validation split under one budget, every trial kept, then tested.

How a tuning study runs, and why:

- **The objective** is the suite's primary metric on the *whole* validation split, computed by the harness's own
  metric engine (:func:`mmsr_bench.evaluation.training.split_metric`) after the model's ordinary ``fit(train,
  valid)``. The test split is dropped from the data before the first trial (``test=None``), so no trial can score,
  read or select on it; adapters from outside this project must first pass the conformance kit's ``no_test_leak``
  check (built-in adapters pass it in the test suite).
- **The sampler** is Optuna's (seeded TPE by default; random; grid over each range's grid values). Each worker's
  sampler is seeded from the study seed, the worker's index and the number of trials already in the study, so two
  workers, or a resumed study, never replay the same random start-up draws.
- **Pruning** reads the validation curve the harness's training loop already produces
  (:func:`mmsr_bench.evaluation.training.listening_to_validations`): Optuna's median rule (a trial below the
  median of earlier trials at the same epoch, after 3 complete trials and 1 epoch) or successive halving; a pruned
  trial is stored with its curve.
- **The budget** is the same for every model of one call: ``--trials N`` (complete + pruned trials) or
  ``--minutes T`` (the summed wall time of the model's finished trials on this machine at the recorded thread
  count; a trial already running when the budget runs out finishes). It is recorded with the study.
- **Storage.** The Optuna study lives in the results store's own database (its RDB storage on the same URL:
  SQLite here, PostgreSQL across machines), with heartbeats: a trial whose process was killed is marked failed
  after the grace period and retried once with the same parameters, so a rerun of a killed ``bench tune`` finishes
  the remaining trials. Our own ``tuning_trials`` table keeps every finished trial (parameters, configuration and
  its hash, validation curve, kept epoch, state, seconds) beside the runs.
- **Then test.** The best configuration runs as ordinary runs over ``--seeds`` (``bench run`` with the tuned
  overrides), each recording ``run_info.tuned_from`` (the study, its trial counts, minutes and best trial), so
  compare, report and the leaderboard work unchanged and say which rows are tuned.

Why one module of this length: one tuning study's life (budget, samplers, pruning, storage, heartbeats and
resumption, workers, test runs), each part depending on the others' state.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from mmsr_bench.errors import BenchError
from mmsr_bench.models import adapter as adapter_mod
from mmsr_bench.models import search_space as spaces

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
EXECUTORS = ("local", "ray")
#: Seconds between a running trial's heartbeats, and after which a trial without one counts as dead.
HEARTBEAT_S = 5
GRACE_S = 20


@dataclass(frozen=True)
class TuneRequest:
    suite_ref: str  # suite name or TOML path (workers load the same)
    models: tuple[str, ...]
    dataset: str
    trials: int | None = None
    minutes: float | None = None
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "median"
    workers: int = 1
    executor: str = "local"
    address: str | None = None
    db_url: str | None = None
    #: Fixed overrides per model (the scoped ``--set`` already resolved), shared by every trial.
    fixed: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    space_file: str | None = None
    threads: int = 1
    device: str | None = None
    #: Seeds of the test runs of the best configuration; empty: tune only.
    test_seeds: tuple[int, ...] = ()


@dataclass
class TuneOutcome:
    model: str
    tuning_uuid: str
    trials: int
    pruned: int
    failed: int
    minutes: float
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    runs: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ checks
def validate(req: TuneRequest) -> None:
    """Every argument checked before any work; one error line naming the option."""
    if (req.trials is None) == (req.minutes is None) and req.sampler != "grid":
        raise BenchError("give exactly one budget: --trials N or --minutes T")
    if req.trials is not None and not 1 <= req.trials <= 100_000:
        raise BenchError(f"--trials {req.trials}: give a number of trials between 1 and 100000")
    if req.minutes is not None and not 0 < req.minutes <= 60 * 24 * 30:
        raise BenchError(f"--minutes {req.minutes:g}: give minutes > 0 (at most 30 days)")
    if req.sampler not in SAMPLERS:
        raise BenchError(f"--sampler {req.sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if req.pruner not in PRUNERS:
        raise BenchError(f"--pruner {req.pruner!r}: choose one of {', '.join(PRUNERS)}")
    if req.executor not in EXECUTORS:
        raise BenchError(f"--executor {req.executor!r}: choose local or ray")
    if not 1 <= req.workers <= 256:
        raise BenchError(f"--workers {req.workers}: give 1 to 256")
    if not 0 <= req.threads <= 256:
        raise BenchError(f"--threads {req.threads}: give 0 (torch's default) to 256")
    from mmsr_bench.evaluation.scoring import check_seeds

    check_seeds([req.seed])
    check_seeds(req.test_seeds, "--seeds", at_least_one=False)
    if not req.models:
        raise BenchError("--model: give one or more model names")


def space_for(model: str, space_file: str | None) -> dict[str, spaces.Param]:
    """The model's search space: the ``--space`` file's table for it, else the one its config class declares."""
    reg = adapter_mod.get(model)
    cls = reg.cls.config_cls
    if space_file:
        return spaces.load_space_file(Path(space_file), model, cls)
    space = spaces.declared_space(cls)
    if not space:
        raise BenchError(f"model {model!r} declares no search space ({cls.__name__}.search_space is empty); give "
                         f"one with --space FILE.toml (a [{model}] table)")
    return space


def check_no_leak(model: str) -> None:
    """Adapters from outside this project must pass the conformance kit's ``no_test_leak`` check before they are
    tuned (the built-in ones pass it in tests/test_conformance_builtins.py)."""
    if model in adapter_mod.catalog():
        return
    from mmsr_bench.models import conformance

    log.info("tune: running the conformance kit's leak check on %s (not a built-in adapter)", model)
    results = {r.name: r for r in conformance.run_checks(model)}
    leak = results["no_test_leak"]
    if not leak.passed:
        raise BenchError(f"{model} fails the conformance kit's no_test_leak check ({leak.reason}); a model that "
                         f"reads test targets cannot be tuned (`bench adapter check {model}` shows every check)")


# ------------------------------------------------------------------------------------------------ identity
def study_key(*, suite: str, fingerprint: str, dataset: str, model: str, seed: int, sampler: str, pruner: str,
              metric: str, space: Mapping[str, spaces.Param], fixed: Mapping[str, str], threads: int) -> str:
    """The identity of a tuning study: the same command on the same frozen data resumes it."""
    doc = {"suite": suite, "fingerprint": fingerprint, "dataset": dataset, "model": model, "seed": seed,
           "sampler": sampler, "pruner": pruner, "metric": metric, "space": spaces.space_json(space),
           "fixed": dict(sorted(fixed.items())), "threads": threads}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ optuna glue
def optuna_storage(db_url: str):
    """Optuna's RDB storage on the results store's URL, with heartbeats (a killed trial is failed after
    :data:`GRACE_S` and retried once with its parameters)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs: dict[str, Any] = {}
    if db_url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words; stable since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(db_url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))


def make_sampler(name: str, seed: int, space: Mapping[str, spaces.Param], config_cls: type):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = {k: (list(p.choices) if isinstance(p, spaces.Choice)
                    else p.grid_values(spaces.field_kind(config_cls, k) == "int")) for k, p in space.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def suggest(trial, space: Mapping[str, spaces.Param], config_cls: type) -> dict[str, Any]:
    """One value per field of ``space`` from the Optuna trial, typed as the config field is."""
    out: dict[str, Any] = {}
    for key, p in sorted(space.items()):
        if isinstance(p, spaces.Choice):
            out[key] = trial.suggest_categorical(key, list(p.choices))
        elif spaces.field_kind(config_cls, key) == "int":
            out[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[key] = trial.suggest_float(key, float(p.low), float(p.high), step=p.step, log=p.log)
    return out


def distributions(space: Mapping[str, spaces.Param], config_cls: type) -> dict[str, Any]:
    """The Optuna distribution of each field of ``space`` (the ones :func:`suggest` samples from)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for key, p in space.items():
        if isinstance(p, spaces.Choice):
            out[key] = CategoricalDistribution(list(p.choices))
        elif spaces.field_kind(config_cls, key) == "int":
            out[key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            out[key] = FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
    return out


def replay_history(study, trials: list, space: Mapping[str, spaces.Param], config_cls: type) -> int:
    """Give an empty Optuna study the history of trials stored elsewhere (a study imported from run files onto
    another machine): the sampler learns from them and new trials are numbered after them. Numbers without a
    stored trial (a trial asked for beyond the budget) become failed placeholders, so numbering stays aligned."""
    import optuna

    S = optuna.trial.TrialState
    dists = distributions(space, config_cls)
    by_number = {t.number: t for t in trials}
    for n in range(max(by_number) + 1 if by_number else 0):
        t = by_number.get(n)
        if t is None:
            study.add_trial(optuna.trial.create_trial(state=S.FAIL))
            continue
        params = json.loads(t.params_json)
        state = {"complete": S.COMPLETE, "pruned": S.PRUNED}.get(t.state, S.FAIL)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params if k in dists}, state=state,
            value=t.value if state == S.COMPLETE else None,
            intermediate_values={int(step): float(v) for step, v in json.loads(t.curve_json or "[]")}))
    return len(by_number)


# ------------------------------------------------------------------------------------------------ one worker
@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to join a study (picklable: sent to worker processes and Ray tasks)."""

    suite_ref: str
    fingerprint: str
    dataset: str
    model: str
    tuning_id: int
    study_name: str
    db_url: str
    space: Mapping[str, spaces.Param]
    fixed: Mapping[str, str]
    seed: int
    sampler: str
    pruner: str
    metric: str
    trials: int | None
    minutes: float | None
    threads: int
    device: str | None
    worker: int = 0


class _Surplus(Exception):
    """This trial was asked for after the budget was already taken by trials of other workers."""


def tuning_data(data):
    """The suite's data without its test split: what every trial may see (training and validation only)."""
    return dataclasses.replace(data, test=None)


def run_worker(spec: WorkerSpec, data=None, *, on_trial: Callable[[Any], None] | None = None) -> int:
    """Run trials of one study until its budget is spent; returns how many this worker finished. ``data``: an
    already loaded :class:`mmsr_bench.suites.build.SuiteData` (the driver's own worker), else loaded and verified
    here against the driver's fingerprint."""
    import optuna

    from mmsr_bench.evaluation.scoring import seed_everything
    from mmsr_bench.evaluation.training import listening_to_validations, split_metric
    from mmsr_bench.paths import auto_device, cache_dir
    from mmsr_bench.results.selection import selection
    from mmsr_bench.results.store import Store, TuningTrial

    if data is None:
        from mmsr_bench.suites import build
        from mmsr_bench.suites.spec import load_suite

        data = build.load(load_suite(spec.suite_ref), spec.dataset)
        if data.fingerprint != spec.fingerprint:
            raise BenchError(f"worker {spec.worker}: {spec.suite_ref}/{spec.dataset} has protocol fingerprint "
                             f"{data.fingerprint[:12]}, the study's is {spec.fingerprint[:12]}: refusing to tune on "
                             "other data")
    data = tuning_data(data)
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    reg = adapter_mod.get(spec.model)
    device = auto_device(spec.device) if reg.cls.uses_torch else (spec.device or "cpu")
    store = Store(spec.db_url)
    storage = optuna_storage(spec.db_url)
    study = optuna.load_study(study_name=spec.study_name, storage=storage, pruner=make_pruner(spec.pruner))
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(spec.sampler, (spec.seed * 1_000_003 + spec.worker * 7919 + existing) % 2 ** 32,
                                 spec.space, reg.cls.config_cls)
    who = f"{platform.node()}:{os.getpid()}"
    S = optuna.trial.TrialState

    surplus: list[int] = []

    def objective(trial) -> float:
        earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and t.state != S.FAIL]
        if spec.trials is not None and len(earlier) >= spec.trials:
            surplus.append(trial.number)  # failed in Optuna's record, never stored as a trial of ours
            trial.set_user_attr("not_run", "the budget was taken by other workers' trials")
            raise _Surplus(f"trial {trial.number} is beyond the budget of {spec.trials} trials")
        params = suggest(trial, spec.space, reg.cls.config_cls)
        overrides = {**spec.fixed, **spaces.as_overrides(params)}
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        curve: list[list[float]] = []
        row = TuningTrial(tuning_id=spec.tuning_id, number=trial.number, params_json=json.dumps(params),
                          started_at=started, worker=who)
        model, config = None, {}

        def listener(step: int, value: float) -> None:
            curve.append([step, value])
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (validation {value:.5f})")

        try:
            seed_everything(spec.seed, torch_too=reg.cls.uses_torch)
            model = adapter_mod.build(spec.model, overrides, seed=spec.seed, device=device,
                                      cache_dir=str(cache_dir("models", spec.model)))
            config = adapter_mod.config_dict(model)
            row.config_json = json.dumps(config, sort_keys=True)
            row.config_hash = adapter_mod.config_hash(model)
            with listening_to_validations(listener):
                model.fit(data.train, data.valid)
            value = split_metric(model.score, data.valid, spec.metric,
                                 batch_size=getattr(model.config, "batch_size", 256))
            row.state, row.value = "complete", value
            return value
        except optuna.TrialPruned:
            row.state = "pruned"
            raise
        except Exception as exc:
            row.state, row.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            row.seconds = time.perf_counter() - t0
            row.finished_at = datetime.now(timezone.utc)
            row.curve_json = json.dumps(curve)
            if model is not None:
                sel = selection(model.run_info, config)
                row.selection_json = json.dumps(sel.as_dict() if sel else {})
            stored = store.add_trial(row)
            if on_trial:
                on_trial(stored)

    done = 0
    while not surplus and not _budget_spent(spec, study, store):
        study.optimize(objective, n_trials=1, catch=(Exception,))
        done += 0 if surplus else 1
    return done


def _budget_spent(spec: WorkerSpec, study, store) -> bool:
    """Whether no new trial may start: enough complete and pruned trials (waiting for trials still running, so a
    dead worker's trial is failed and retried rather than counted), or the minutes spent."""
    import optuna
    from optuna.storages import fail_stale_trials

    S = optuna.trial.TrialState
    while True:
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (S.COMPLETE, S.PRUNED) for t in trials)
        running = sum(t.state == S.RUNNING for t in trials)
        waiting = sum(t.state == S.WAITING for t in trials)
        if spec.minutes is not None:
            spent = sum(t.seconds for t in store.trials(spec.tuning_id))
            if spent >= 60 * spec.minutes:
                return True
        if spec.trials is None:
            if spec.sampler == "grid" and spec.minutes is None:  # the whole grid, once
                from optuna.samplers import GridSampler

                sampler = study.sampler
                if isinstance(sampler, GridSampler) and sampler.is_exhausted(study) and not waiting:
                    return True
            return False
        if finished >= spec.trials:
            return True
        if finished + running + waiting < spec.trials or waiting:
            return False
        time.sleep(1.0)  # the rest of the budget is running elsewhere (or died there): wait for it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            _beat_for_silent_trials(study, [t for t in trials if t.state == S.RUNNING])
            fail_stale_trials(study)


def _beat_for_silent_trials(study, running: list) -> None:
    """Optuna fails a dead trial only from its heartbeat, and a trial's first heartbeat comes from a thread started
    after the trial is created: a worker killed in between leaves a RUNNING trial without any heartbeat, which
    ``fail_stale_trials`` skips forever, so every later worker would wait for it. Such a trial, once older than the
    grace period, gets one heartbeat now: it is then failed as stale a grace period later, and retried."""
    from datetime import timedelta

    from optuna.storages import RDBStorage
    from optuna.storages._rdb.models import TrialHeartbeatModel

    storage = getattr(study._storage, "_backend", study._storage)  # a study wraps its RDBStorage in a cache
    old = [t for t in running if t.datetime_start is not None
           and datetime.now() - t.datetime_start > timedelta(seconds=GRACE_S)]
    if not old or not isinstance(storage, RDBStorage):
        return
    session = storage.scoped_session()
    try:
        beating = {row.trial_id for row in session.query(TrialHeartbeatModel.trial_id)
                   .filter(TrialHeartbeatModel.trial_id.in_([t._trial_id for t in old]))}
    finally:
        session.close()
    for t in old:
        if t._trial_id not in beating:
            log.warning("trial %d has run for over %d s without a heartbeat (its worker died before the first "
                        "one): giving it one, so it is failed and retried", t.number, GRACE_S)
            storage.record_heartbeat(t._trial_id)


# ------------------------------------------------------------------------------------------------ driver
def _worker_entry(spec: WorkerSpec, home: str | None) -> int:
    """A worker process or Ray task: the same cache home as the driver, then :func:`run_worker`."""
    if home:
        os.environ["MMSR_BENCH_HOME"] = home
    logging.basicConfig(level=logging.WARNING)
    return run_worker(spec)


def _launch(specs: list[WorkerSpec], req: TuneRequest, on_trial: Callable[[Any], None] | None, data) -> None:
    """Run the workers: the driver's own process alone (one local worker), local processes, or Ray tasks."""
    if len(specs) == 1 and req.executor == "local":
        run_worker(specs[0], data, on_trial=on_trial)
        return
    home = os.environ.get("MMSR_BENCH_HOME")
    if req.executor == "ray":
        from mmsr_bench.runner.sweep import import_ray

        ray = import_ray()
        if not ray.is_initialized():
            kw = {"address": req.address} if req.address else {"num_cpus": max(len(specs), 1)}
            ray.init(include_dashboard=False, log_to_driver=False, **kw)
        remote = ray.remote(max_retries=0)(_worker_entry)
        ray.get([remote.remote(s, home) for s in specs])
        return
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(len(specs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for fut in [pool.submit(_worker_entry, s, home) for s in specs]:
            fut.result()


def tune(req: TuneRequest, *, on_trial: Callable[[Any], None] | None = None, data=None) -> list[TuneOutcome]:
    """Tune every model of ``req`` on one dataset's validation split, then (``test_seeds``) run the best
    configuration of each on the test split. Returns one outcome per model. ``data``: the dataset already loaded
    (tests hand in a variant of it); by default it is loaded and verified against the frozen hashes."""
    import optuna

    from mmsr_bench.paths import check_device, default_db_url
    from mmsr_bench.results.store import Store, Tuning, check_store
    from mmsr_bench.runner.execute import RunRequest, code_version, execute
    from mmsr_bench.suites import build
    from mmsr_bench.suites.spec import load_suite

    validate(req)
    check_device(req.device)
    db_url = req.db_url or default_db_url()
    check_store(db_url)
    suite = load_suite(req.suite_ref)
    suite.dataset(req.dataset)  # an unknown dataset fails here
    metric = suite.evaluation.primary
    plans = []
    for model in req.models:
        reg = adapter_mod.get(model)
        space = space_for(model, req.space_file)
        fixed = dict(req.fixed.get(model, {}))
        clash = sorted(set(space) & set(fixed))
        if clash:
            raise BenchError(f"--set {', '.join(clash)} for {model}: these fields are in its search space; drop them "
                             "from --set or from the space")
        plans.append((model, reg, space, fixed, adapter_mod.plan(model, fixed).needs))  # a bad --set fails here
    for model, *_ in plans:
        check_no_leak(model)
    if data is None:
        data = build.load(suite, req.dataset)
    for model, reg, space, fixed, needs in plans:
        adapter_mod.check_needs(needs, data, model)
    store = Store(db_url)
    store.check_writable()
    storage = optuna_storage(store.connect_url)
    sha, _ = code_version()
    from mmsr_bench.evaluation.scoring import cpu_model

    outcomes = []
    for model, reg, space, fixed, _ in plans:
        key = study_key(suite=suite.name, fingerprint=data.fingerprint, dataset=req.dataset, model=model,
                        seed=req.seed, sampler=req.sampler, pruner=req.pruner, metric=metric, space=space,
                        fixed=fixed, threads=req.threads)
        budget = {"trials": req.trials, "minutes": req.minutes, "threads": req.threads, "workers": req.workers,
                  "executor": req.executor, "cpu": cpu_model()}
        tuning = store.tuning_for(Tuning(
            key=key, study_name=f"mmsr-bench-{key[:20]}", suite=suite.name, suite_hash=data.fingerprint,
            dataset=req.dataset, model=model, seed=req.seed, sampler=req.sampler, pruner=req.pruner, metric=metric,
            space_json=json.dumps(spaces.space_json(space)), fixed_json=json.dumps(fixed, sort_keys=True),
            budget_json=json.dumps(budget), host=platform.node(), code_version=sha))
        store.update_tuning(tuning.id, budget_json=json.dumps(budget))
        ostudy = optuna.create_study(study_name=tuning.study_name, storage=storage, direction="maximize",
                                     load_if_exists=True)
        stored = store.trials(tuning.id)
        if stored and not ostudy.trials:  # imported from run files: Optuna's history is rebuilt from ours
            log.info("tuning %s: rebuilding the Optuna history from %d stored trials", model, len(stored))
            replay_history(ostudy, stored, space, reg.cls.config_cls)
        specs = [WorkerSpec(req.suite_ref, data.fingerprint, req.dataset, model, tuning.id, tuning.study_name,
                            store.connect_url, space, fixed, req.seed, req.sampler, req.pruner, metric, req.trials,
                            req.minutes, req.threads, req.device, worker=w) for w in range(req.workers)]
        log.info("tuning %s on %s/%s: %s, sampler %s, pruner %s, %d worker(s)", model, suite.name, req.dataset,
                 f"{req.trials} trials" if req.trials else f"{req.minutes:g} min", req.sampler, req.pruner,
                 req.workers)
        _launch(specs, req, on_trial, data)
        outcome = summarize(store, tuning)
        if req.test_seeds:
            if outcome.best_trial is None:
                raise BenchError(f"{model}: no trial completed, so there is no configuration to test (`bench tune "
                                 f"show` lists the trials and their errors)")
            tuned_from = {"tuning": outcome.tuning_uuid, "trials": outcome.trials, "pruned": outcome.pruned,
                          "failed": outcome.failed, "minutes": round(outcome.minutes, 2),
                          "best_trial": outcome.best_trial, "best_value": outcome.best_value, "metric": metric,
                          "sampler": req.sampler, "budget": {k: budget[k] for k in ("trials", "minutes", "threads")}}
            outcome.runs = execute(RunRequest(
                suite=suite, model=model, datasets=[req.dataset], seeds=list(req.test_seeds),
                overrides={**fixed, **spaces.as_overrides(outcome.best_params)}, db_url=db_url, device=req.device,
                resume=True, tuned_from=tuned_from))
        outcomes.append(outcome)
    return outcomes


def summarize(store, tuning) -> TuneOutcome:
    """The study's counts, time and best complete trial (ties: the earlier trial), stored on its row."""
    trials = store.trials(tuning.id)
    complete = [t for t in trials if t.state == "complete" and t.value is not None]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    out = TuneOutcome(tuning.model, tuning.uuid, len(complete), sum(t.state == "pruned" for t in trials),
                      sum(t.state == "failed" for t in trials), sum(t.seconds for t in trials) / 60.0,
                      None if best is None else best.number, None if best is None else best.value,
                      {} if best is None else json.loads(best.params_json))
    store.update_tuning(tuning.id, best_trial=out.best_trial, best_value=out.best_value,
                        best_params_json=json.dumps(out.best_params))
    return out

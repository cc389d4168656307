"""The runner: verify a suite's artifacts, fit an adapter on training data, score the shared test candidates,
compute per-user metrics with the harness's engine, and store everything in one transaction."""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import resource
import subprocess
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Mapping
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from mmsr_bench import progress
from mmsr_bench.errors import BenchError, MissingModality
from mmsr_bench.evaluation import metrics
from mmsr_bench.evaluation.scoring import check_seeds, score_split, seed_everything
from mmsr_bench.evaluation.training import time_limit
from mmsr_bench.models import adapter as adapter_mod
from mmsr_bench.models.adapter import check_needs
from mmsr_bench.models.adapter import config_dict as _config_dict
from mmsr_bench.paths import REPO_ROOT, auto_device, cache_dir, check_device
from mmsr_bench.results.store import Run, Store, check_store
from mmsr_bench.suites import build
from mmsr_bench.suites.build import SuiteData
from mmsr_bench.suites.spec import SuiteSpec

log = logging.getLogger(__name__)

RECORDED_PACKAGES = ("mmsr-bench", "numpy", "scipy", "pandas", "torch", "recbole", "transformers", "peft",
                     "bitsandbytes", "open_clip_torch", "sentence-transformers", "sqlmodel")


def code_version() -> tuple[str, bool]:
    """Git SHA of the harness checkout and whether the work tree is dirty ("unknown" outside git)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return sha or "unknown", dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


@dataclass(frozen=True)
class RunRequest:
    suite: SuiteSpec
    model: str
    datasets: list[str]
    seeds: list[int]
    overrides: dict[str, str]
    db_url: str | None = None
    device: str | None = None
    variant: str = ""
    perturb: str | None = None  # e.g. "blank:0.2": run on items whose images are perturbed; stored as the variant
    also: tuple[SuiteSpec, ...] = ()  # other suites on the identical split: score the same fitted model there too
    #: Skip a (dataset, seed) cell whose completed run with the same suite fingerprint, model, variant and config
    #: hash is already in the store (an interrupted multi-seed command picks up where it stopped).
    resume: bool = False
    #: Wall seconds one cell (fit and scoring) may take before it is stopped and recorded as failed; None: no limit.
    time_limit_s: float | None = None
    #: (index, of), 0-based: score only that block of the evaluation users, stored as a ``shard`` run; the cell's
    #: shards are merged into one completed run when the last one is stored (mmsr_bench.results.shards). A fine-tuned
    #: LLM's completed fit is reused by the other shards (finetune.reusing_fits).
    shard: tuple[int, int] | None = None
    #: The tuning study this configuration came from (``bench tune``: its uuid, trial counts, minutes, best trial),
    #: recorded as ``run_info.tuned_from`` so tables can say which rows are tuned.
    tuned_from: Mapping[str, Any] | None = None
    #: The model's configuration resolved once (:func:`mmsr_bench.models.adapter.plan`) by a caller that already
    #: checked it; None: :func:`execute` resolves it from ``overrides``.
    plan: adapter_mod.ModelPlan | None = None


def stored_cell(store: Store, req: "RunRequest", data: SuiteData, seed: int, cfg_hash: str) -> Run | None:
    """The completed run of this cell already in the store, if any (for ``resume``)."""
    return store.completed_cell(suite=data.suite.name, fingerprint=data.fingerprint, dataset=data.dataset,
                                model=req.model, variant=req.variant or (req.perturb or ""), seed=seed,
                                config_hash=cfg_hash)


def _stored_shard(store: Store, req: RunRequest, data: SuiteData, seed: int, cfg_hash: str) -> Run | None:
    from mmsr_bench.results.shards import stored_shard

    like = Run(suite=data.suite.name, suite_hash=data.fingerprint, dataset=data.dataset, model=req.model,
               variant=req.variant or (req.perturb or ""), config_hash=cfg_hash, seed=seed,
               eval_users_hash=data.eval_users_hash)
    return stored_shard(store, like, *req.shard)


def run_one(req: RunRequest, data: SuiteData, seed: int, group_id: str, store: Store,
            also: list[SuiteData] | None = None) -> list[Run]:
    """Fit once on ``data``'s training split, score its test split, and (``also``) the test splits of other suites
    built on the identical processed sequences (e.g. amazon4-full beside amazon4). One run is stored per suite;
    early stopping always used ``data``'s validation split, which each run records."""
    reg = adapter_mod.get(req.model)
    device = auto_device(req.device) if reg.cls.uses_torch else (req.device or "cpu")  # numpy models: no torch
    if req.perturb and not req.variant:
        req = dataclasses.replace(req, variant=req.perturb)
    repro = seed_everything(seed, torch_too=reg.cls.uses_torch)
    plan = req.plan or adapter_mod.plan(req.model, req.overrides)
    model = plan.instantiate(seed=seed, device=device, cache_dir=str(cache_dir("models", req.model)))
    check_needs(plan.needs, data, req.model)
    sha, dirty = code_version()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    config_text = json.dumps(_config_dict(model), sort_keys=True)

    def record(target: SuiteData, status: str, n_users: int | None = None, shard: dict | None = None,
               **fields) -> Run:
        extra = {"shard": shard} if shard else {}
        if req.tuned_from:
            extra["tuned_from"] = dict(req.tuned_from)
        info = dict(model.run_info, **extra, fitted_on_suite=data.suite.name, validation_suite=data.suite.name,
                    time_limit_s=req.time_limit_s, **accelerator_memory(device),
                    item_text_source=build.item_text_source(data),  # the text the model was fitted on
                    data_quality_warnings=list(target.quality_warnings), reproducibility=repro)
        return Run(
            group_id=group_id, suite=target.suite.name, suite_hash=target.fingerprint, dataset=target.dataset,
            model=req.model, variant=req.variant, config_json=config_text,
            config_hash=plan.config_hash, seed=seed, code_version=sha,
            code_dirty=dirty, packages_json=json.dumps(package_versions()), host=platform.node(), device=device,
            started_at=started, finished_at=datetime.now(timezone.utc), status=status,
            peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            n_users=len(target.test) if n_users is None else n_users,
            eval_users_hash=target.eval_users_hash, run_info_json=json.dumps(info, default=str), **fields)

    fit_s = 0.0
    scored = []
    phase = "fitting"
    try:
        with time_limit(req.time_limit_s, f"{req.model} on {data.suite.name}/{data.dataset} seed {seed}"):
            log.info("fitting %s on %s/%s (seed %d)", req.model, data.suite.name, data.dataset, seed)
            with _fit_reuse(req):
                model.fit(data.train, data.valid)
            fit_s = time.perf_counter() - t0
            phase = "scoring"
            for target in [data, *(also or [])]:
                t1 = time.perf_counter()
                split, shard = target.test, None
                if req.shard is not None:
                    split = target.test.shard(*req.shard)
                    start, end = target.test.shard_bounds(*req.shard)
                    shard = {"index": req.shard[0], "of": req.shard[1], "start": start, "end": end}
                label = f"{target.suite.name}/{target.dataset}" + (
                    f" shard {req.shard[0] + 1}/{req.shard[1]}" if shard else "")
                per_user = score_split(model, split, target.suite.evaluation.names(),
                                       batch_size=getattr(model.config, "batch_size", 256),
                                       description=f"scoring {label}")
                scored.append((target, per_user, time.perf_counter() - t1, shard, len(split)))
    except BaseException as exc:
        # A failed or interrupted run is recorded without any metric (its own transaction), then re-raised; a store
        # that cannot take even that record must not hide the original error.
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        fit_s = fit_s or time.perf_counter() - t0
        try:
            with _signals_held():  # a second Ctrl-C or SIGTERM while the record is written cannot cut it short
                store.add_run(record(data, status, error=f"{type(exc).__name__}: {exc}"[:2000], fit_seconds=fit_s))
        except Exception as store_exc:  # noqa: BLE001 - logged; the run's own error is what the user must see
            log.warning("could not record the %s run in %s: %s", status, store.url, store_exc)
        if isinstance(exc, (KeyboardInterrupt, BenchError)):
            raise
        # The adapter boundary: whatever the adapter raised (or a sys.exit in its code) becomes one error line
        # naming the model and the phase; the traceback is in the log (--verbose).
        log.debug("%s failed while %s", req.model, phase, exc_info=exc)
        what = (f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit)
                else f"raised {type(exc).__name__}: {str(exc)[:500]}")
        raise BenchError(f"{req.model} {what} while {phase} on {data.suite.name}/{data.dataset} seed {seed}; the run "
                         "is recorded as failed (--verbose shows the traceback)") from None
    out = []
    for target, per_user, score_s, shard, n_users in scored:
        agg = metrics.aggregate(per_user)
        run = record(target, "shard" if shard else "completed", n_users=n_users, shard=shard, fit_seconds=fit_s,
                     score_seconds=score_s, metrics_json=json.dumps(agg))
        stored = store_or_keep(store, run, per_user)
        out.append(stored)
        if shard:
            from mmsr_bench.results.shards import merge_if_complete

            merged = merge_if_complete(store, stored)
            if merged is not None:
                out.append(merged)
    return out


def _fit_reuse(req: RunRequest):
    """In shard mode, a fine-tuned LLM's completed fit of the same cell is loaded instead of trained again."""
    if req.shard is None:
        return nullcontext()
    from mmsr_bench.models.toolkits.finetune import reusing_fits

    return reusing_fits()


@contextmanager
def _signals_held():
    """Defer SIGINT and SIGTERM for the few milliseconds a run's record takes to write (main thread only); a
    signal that arrives meanwhile is delivered as KeyboardInterrupt right after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]} while the run's record was written (the record is whole)")


def accelerator_memory(device: str) -> dict:
    """Peak accelerator memory of this process on a CUDA device (beside the CPU RSS every run records); empty on
    the CPU."""
    if not str(device).startswith("cuda"):
        return {}
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_accelerator_memory_mb": torch.cuda.max_memory_allocated(torch.device(device)) / 2 ** 20,
            "accelerator": torch.cuda.get_device_name(torch.device(device))}


def store_or_keep(store: Store, run: Run, per_user: dict) -> Run:
    """Store a finished run; if the store refuses it now (unwritable, full, locked, gone), keep it as a portable
    run file under the cache and raise one line saying how to import it, so finished compute is never lost."""
    from sqlalchemy.exc import SQLAlchemyError

    from mmsr_bench.results import run_files
    from mmsr_bench.results.store import encode_vector

    try:
        return store.add_run(run, per_user)
    except (SQLAlchemyError, OSError, BenchError) as exc:
        rec = run_files.RunRecord(run, {m: encode_vector(v) for m, v in per_user.items()})
        folder = cache_dir("unsaved-runs")
        path = folder / run_files.relative_path(run_files.record_document(rec))
        run_files.export_records([rec], [], folder)
        reason = "; ".join(str(getattr(exc, "orig", None) or exc).splitlines())[:300]
        raise BenchError(f"the finished run ({run.model} on {run.suite}/{run.dataset} seed {run.seed}) could not be "
                         f"stored in {store.url} ({reason}); it is kept in {path}: store it with `bench store import "
                         f"{path} --db URL`") from None


def perturbed(data: SuiteData, spec: str) -> SuiteData:
    """The same split with a share of item images blanked, noised or swapped (robustness analysis). The perturbed
    images are derived deterministically from the suite seed and written under the cache."""
    from mmsr_bench.data import perturb

    if not data.items.has("image"):
        raise MissingModality(f"--perturb {spec}: dataset {data.dataset!r} has no item images to perturb")
    out = cache_dir("perturbed", data.suite.name, data.dataset, spec.replace(":", "-"))
    items = perturb.apply_to_items(data.items, spec, seed=data.suite.protocol.seed, out_dir=out)
    return dataclasses.replace(data, items=items, train=dataclasses.replace(data.train, items=items))


def execute(req: RunRequest, *, on_result=None) -> list[Run]:
    """Run a model on the requested datasets and seeds. Every dataset is verified before any fitting starts."""
    check_seeds(req.seeds, "seeds")
    check_device(req.device)
    check_store(req.db_url)  # a bad --db fails here, and no store file is created by a rejected run
    reg = adapter_mod.get(req.model)  # unknown model -> error before any work
    # Resolved once with the user's overrides: a bad --set fails here, and the modalities this configuration
    # really needs (e.g. mmgcn with modalities=id,text) are known before any data work.
    if req.plan is None:
        req = dataclasses.replace(req, plan=adapter_mod.plan(req.model, req.overrides))
    plan = req.plan
    needs = plan.needs
    loaded = []
    for name in req.datasets:
        with progress.track(f"verifying {req.suite.name}/{name}", total=None):
            data = build.load(req.suite, name)
        check_needs(needs, data, req.model)
        if req.shard is not None:
            data.test.shard_bounds(*req.shard)  # more shards than evaluation users: refused before any fit
        if req.perturb:
            data = perturbed(data, req.perturb)
        extra = []
        for other in req.also:
            with progress.track(f"verifying {other.name}/{name}", total=None):
                o = build.load(other, name)
            same = build.sha256_file(o.directory / "sequences.tsv") == build.sha256_file(data.directory / "sequences.tsv")
            if not same or o.suite.preprocess != req.suite.preprocess:
                raise BenchError(f"--also {other.name}: its {name} split differs from {req.suite.name}'s, so a model "
                                 f"fitted on one cannot be scored on the other; run it separately")
            extra.append(o if not req.perturb else perturbed(o, req.perturb))
        loaded.append((data, extra))
    store = Store(req.db_url)
    store.check_writable()  # a store that cannot take the run fails now, not after the fit
    group_id = uuid.uuid4().hex[:12]
    results = []
    cfg_hash = plan.config_hash
    for data, extra in loaded:
        for seed in req.seeds:
            if req.resume:
                done = stored_cell(store, req, data, seed, cfg_hash)
                if done is None and req.shard is not None:
                    done = _stored_shard(store, req, data, seed, cfg_hash)
                if done is not None:
                    log.warning("resume: %s on %s/%s seed %d is already stored as run %d; skipped", req.model,
                                data.suite.name, data.dataset, seed, done.id)
                    continue
            for run in run_one(req, data, seed, group_id, store, also=extra):
                results.append(run)
                if on_result:
                    on_result(run)
    return results

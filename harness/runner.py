"""The runner: verify a suite's artifacts, fit an adapter on training data, score the shared test candidates,
compute per-user metrics with the harness's engine, and store everything in one transaction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import random
import resource
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from harness import adapter as adapter_mod
from harness import build, metrics, progress
from harness.adapter import Adapter, Needs
from harness.build import SuiteData
from harness.data import EvalSplit
from harness.errors import BenchError, MissingModality
from harness.paths import REPO_ROOT, auto_device, cache_dir, check_device
from harness.store import Run, Store, check_store
from harness.suites import SuiteSpec
from harness.training import evenly_spaced

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


def seed_everything(seed: int, torch_too: bool = True) -> dict:
    """Seed every generator and ask torch for deterministic kernels; returns what a run must record to be
    repeatable: the same seed gives the same numbers at the same torch thread count (CPU reductions are split by
    thread, so another thread count may change the last digits; docs/results.md measures by how much)."""
    random.seed(seed)
    np.random.seed(seed)
    info: dict = {"seed": seed}
    if not torch_too:
        return info
    try:
        import torch
    except ImportError:
        return info
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    info.update(torch_threads=torch.get_num_threads(), torch_deterministic=True)
    return info


def check_needs(needs: Needs, data: SuiteData, model: str) -> None:
    """Refuse, before any training, when the adapter needs a modality the dataset lacks."""
    items = data.items
    if needs.text and not any(items.has(c) for c in ("title", "description")):
        raise MissingModality(
            f"model {model!r} needs item text, but dataset {data.dataset!r} of suite {data.suite.name!r} has none "
            f"(no titles or descriptions). Import the raw Amazon meta files with `bench data import`, or pick a "
            f"dataset with text.")
    if needs.images and not items.has("image"):
        raise MissingModality(
            f"model {model!r} needs item images, but dataset {data.dataset!r} of suite {data.suite.name!r} has none. "
            f"The amazon4-mm suite joins the raw Amazon 2014 meta files (titles and image URLs): download "
            f"meta_<Category>.json.gz, run `bench data import amazon4-mm --from DIR`, `bench suite freeze amazon4-mm` "
            f"(review the diff), `bench data images --suite amazon4-mm`, then run on --suite amazon4-mm; or pick a "
            f"text-only variant (e.g. mllm-srec-text).")


def score_split(model: Adapter, split: EvalSplit, names: list[str], batch_size: int = 256,
                description: str = "scoring") -> dict[str, np.ndarray]:
    """Score every evaluation user on the shared candidates and return per-user metric vectors."""
    parts = []
    t0 = time.perf_counter()
    with progress.track(description, total=len(split)) as task:
        for i, batch in enumerate(split.batches(batch_size)):
            scores = np.asarray(model.score(batch), dtype=np.float64)
            if i == 0:
                _announce_estimate(description, len(batch.users), len(split), time.perf_counter() - t0)
            if scores.shape != batch.candidates.shape:
                raise BenchError(f"{type(model).__name__}.score returned shape {scores.shape}, expected "
                                 f"{batch.candidates.shape}")
            if split.full_ranking:
                sl = slice(batch.offset, batch.offset + len(batch.users))
                parts.append(metrics.rank_counts_full(scores, split.targets[sl], split.exclude[sl]))
            else:
                parts.append(metrics.rank_counts(scores))
            task.advance(len(batch.users))
    return metrics.per_user_metrics(metrics.RankCounts.concat(parts), names)


def _announce_estimate(description: str, done: int, total: int, seconds: float, threshold: float = 60.0) -> None:
    """Before a long scoring pass (LLM scorers on CPU), say how long it will take, from the first batch."""
    if done and total > done:
        estimate = seconds * total / done
        if estimate > threshold:
            log.warning("%s: %d users, about %.0f min at %.1f users/s (estimated from the first batch)",
                        description, total, estimate / 60, done / max(seconds, 1e-9))


def evaluate_valid(model: Adapter, valid: EvalSplit, metric: str = "ndcg@10", batch_size: int = 256,
                   max_users: int | None = None) -> float:
    """Mean validation metric on the shared validation candidates, for an adapter that early-stops in its own loop
    (an adapter that trains in epochs hands its loop to :func:`harness.training.fit_epochs` instead)."""
    vec = score_split(model, evenly_spaced(valid, max_users), [metric], batch_size, description="validating")[metric]
    return float(vec.mean())


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


def config_hash(model: Adapter) -> str:
    """The identity of a configuration: sha256 of its canonical JSON (what the store records as config_hash)."""
    return hashlib.sha256(json.dumps(_config_dict(model), sort_keys=True).encode()).hexdigest()


def stored_cell(store: Store, req: "RunRequest", data: SuiteData, seed: int, cfg_hash: str) -> Run | None:
    """The completed run of this cell already in the store, if any (for ``resume``)."""
    variant = req.variant or (req.perturb or "")
    for r in store.runs(suite=data.suite.name, dataset=data.dataset, model=req.model, variant=variant):
        if r.seed == seed and r.suite_hash == data.fingerprint and r.config_hash == cfg_hash:
            return r
    return None


def _config_dict(model: Adapter) -> dict:
    cfg = dataclasses.asdict(model.config)
    return json.loads(json.dumps(cfg, default=str))


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
    model = adapter_mod.build(req.model, req.overrides, seed=seed, device=device,
                              cache_dir=str(cache_dir("models", req.model)))
    check_needs(getattr(model, "effective_needs", reg.cls.needs), data, req.model)
    sha, dirty = code_version()
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    config_text = json.dumps(_config_dict(model), sort_keys=True)

    def record(target: SuiteData, status: str, **fields) -> Run:
        info = dict(model.run_info, fitted_on_suite=data.suite.name, validation_suite=data.suite.name,
                    item_text_source=build.item_text_source(data),  # the text the model was fitted on
                    data_quality_warnings=list(target.quality_warnings), reproducibility=repro)
        return Run(
            group_id=group_id, suite=target.suite.name, suite_hash=target.fingerprint, dataset=target.dataset,
            model=req.model, variant=req.variant, config_json=config_text,
            config_hash=config_hash(model), seed=seed, code_version=sha,
            code_dirty=dirty, packages_json=json.dumps(package_versions()), host=platform.node(), device=device,
            started_at=started, finished_at=datetime.now(timezone.utc), status=status,
            peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, n_users=len(target.test),
            eval_users_hash=target.eval_users_hash, run_info_json=json.dumps(info, default=str), **fields)

    fit_s = 0.0
    scored = []
    try:
        log.info("fitting %s on %s/%s (seed %d)", req.model, data.suite.name, data.dataset, seed)
        model.fit(data.train, data.valid)
        fit_s = time.perf_counter() - t0
        for target in [data, *(also or [])]:
            t1 = time.perf_counter()
            per_user = score_split(model, target.test, target.suite.evaluation.names(),
                                   batch_size=getattr(model.config, "batch_size", 256),
                                   description=f"scoring {target.suite.name}/{target.dataset}")
            scored.append((target, per_user, time.perf_counter() - t1))
    except BaseException as exc:
        # A failed or interrupted run is recorded without any metric (its own transaction), then re-raised.
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        fit_s = fit_s or time.perf_counter() - t0
        store.add_run(record(data, status, error=f"{type(exc).__name__}: {exc}"[:2000], fit_seconds=fit_s))
        raise
    out = []
    for target, per_user, score_s in scored:
        agg = metrics.aggregate(per_user)
        run = record(target, "completed", fit_seconds=fit_s, score_seconds=score_s, metrics_json=json.dumps(agg))
        out.append(store.add_run(run, per_user))
    return out


def perturbed(data: SuiteData, spec: str) -> SuiteData:
    """The same split with a share of item images blanked, noised or swapped (robustness analysis). The perturbed
    images are derived deterministically from the suite seed and written under the cache."""
    from harness import perturb

    if not data.items.has("image"):
        raise MissingModality(f"--perturb {spec}: dataset {data.dataset!r} has no item images to perturb")
    out = cache_dir("perturbed", data.suite.name, data.dataset, spec.replace(":", "-"))
    items = perturb.apply_to_items(data.items, spec, seed=data.suite.protocol.seed, out_dir=out)
    return dataclasses.replace(data, items=items, train=dataclasses.replace(data.train, items=items))


def execute(req: RunRequest, *, on_result=None) -> list[Run]:
    """Run a model on the requested datasets and seeds. Every dataset is verified before any fitting starts."""
    bad = [s for s in req.seeds if not isinstance(s, int) or not 0 <= s < 2 ** 32]
    if bad or not req.seeds:
        raise BenchError(f"seeds {bad or '[]'}: give one or more integers in [0, 2**32 - 1]")
    check_device(req.device)
    check_store(req.db_url)  # a bad --db fails here, and no store file is created by a rejected run
    reg = adapter_mod.get(req.model)  # unknown model -> error before any work
    # Built once with the user's overrides (constructors are cheap): a bad --set fails here, and the modalities
    # this configuration really needs (e.g. mmgcn with modalities=id,text) are known before any data work.
    probe = adapter_mod.build(req.model, req.overrides, device="cpu")
    needs = getattr(probe, "effective_needs", reg.cls.needs)
    loaded = []
    for name in req.datasets:
        with progress.track(f"verifying {req.suite.name}/{name}", total=None):
            data = build.load(req.suite, name)
        check_needs(needs, data, req.model)
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
    group_id = uuid.uuid4().hex[:12]
    results = []
    cfg_hash = config_hash(probe)
    for data, extra in loaded:
        for seed in req.seeds:
            if req.resume:
                done = stored_cell(store, req, data, seed, cfg_hash)
                if done is not None:
                    log.warning("resume: %s on %s/%s seed %d is already stored as run %d; skipped", req.model,
                                data.suite.name, data.dataset, seed, done.id)
                    continue
            for run in run_one(req, data, seed, group_id, store, also=extra):
                results.append(run)
                if on_result:
                    on_result(run)
    return results

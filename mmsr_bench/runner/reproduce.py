"""Rerun a stored cell (``bench reproduce RUN``): the recorded suite, dataset, model, configuration, seed and variant,
then the per-user differences against the recorded vectors.

The run is looked up among the reference runs first, then in the local store. Its configuration is rebuilt as
overrides of the model's defaults and must hash to the recorded ``config_hash`` (else this version cannot rebuild it,
and the field that differs is named); its suite fingerprint must equal the local spec's. The rerun is stored like
any ``bench run`` in the local store.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.models import adapter as adapter_mod
from mmsr_bench.results.store import Run, Store, check_store
from mmsr_bench.runner import execute as runner


@dataclass(frozen=True)
class MetricDiff:
    metric: str
    recorded: float
    rerun: float
    max_abs_diff: float  # largest per-user |rerun - recorded|
    users_differing: int


@dataclass(frozen=True)
class Reproduction:
    recorded: Run
    source: str  # "reference" or the local store's URL
    rerun: Run
    diffs: list[MetricDiff]

    @property
    def largest(self) -> float:
        return max((d.max_abs_diff for d in self.diffs), default=0.0)

    @property
    def exact(self) -> bool:
        return all(d.max_abs_diff == 0.0 for d in self.diffs)


def find_run(key: str, db: str | None) -> tuple[Run, Store, str]:
    """The run whose uuid (or a unique prefix of at least 8 hex digits) is ``key``: among the reference runs, then
    in the local store."""
    from mmsr_bench.results import reference

    key = key.strip().lower()
    if len(key) < 8:
        raise BenchError(f"RUN {key!r}: give a run uuid (or its first 8 or more hex digits)")
    places: list[tuple[Store, str]] = []
    if reference.reference_dir().is_dir():
        places.append((reference.reference_store(), "reference"))
    try:
        local = Store.for_reading(db)
        places.append((local, local.url))
    except BenchError:
        pass
    for store, label in places:
        hits = [r for r in store.runs(status="completed") if r.uuid.startswith(key)]
        if len(hits) > 1:
            raise BenchError(f"RUN {key!r} matches {len(hits)} runs in {label}; give more of the uuid")
        if hits:
            return hits[0], store, label
    raise BenchError(f"RUN {key!r}: no completed run with that uuid among the reference runs or in "
                     f"{db or 'the local store'}")


def recorded_overrides(run: Run) -> dict:
    """The recorded configuration as overrides of the model's current defaults; it must rebuild the recorded
    ``config_hash``."""
    try:
        base = adapter_mod.build(run.model)
    except BenchError as exc:
        raise BenchError(f"run {run.uuid}: model {run.model!r} cannot be built here: {exc}") from None
    default = adapter_mod.config_dict(base)  # fields added later (adapter.later_field) are absent at their default
    recorded = json.loads(run.config_json)
    unknown = sorted(set(recorded) - {f.name for f in dataclasses.fields(base.config)})
    if unknown:
        raise BenchError(f"run {run.uuid}: its configuration field {unknown[0]!r} is unknown to this version of "
                         f"{run.model}; it cannot be rebuilt")
    overrides = {k: v for k, v in recorded.items() if k not in default or default[k] != v}
    built = adapter_mod.build(run.model, overrides)
    if adapter_mod.config_hash(built) != run.config_hash:
        now = adapter_mod.config_dict(built)
        diff = sorted(k for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))
        raise BenchError(f"run {run.uuid}: this version rebuilds its configuration with another hash "
                         f"(fields {', '.join(diff) or 'none differ; the hash rule changed'})")
    return overrides


def reproduce(key: str, db: str | None, *, device: str | None = None) -> Reproduction:
    from mmsr_bench.suites.spec import load_suite

    check_store(db)
    run, store, label = find_run(key, db)
    spec = load_suite(run.suite)
    if run.dataset not in [d.name for d in spec.datasets]:
        raise BenchError(f"run {run.uuid}: suite {run.suite!r} has no dataset {run.dataset!r} here")
    if spec.hashes.get(run.dataset) and spec.protocol_fingerprint(run.dataset) != run.suite_hash:
        raise BenchError(f"run {run.uuid}: its suite fingerprint differs from the local spec of "
                         f"{run.suite}/{run.dataset}; it was made on other frozen data")
    overrides = recorded_overrides(run)
    req = runner.RunRequest(spec, run.model, [run.dataset], [run.seed], overrides,
                            db, device, perturb=run.variant or None)
    reruns = runner.execute(req)
    if not reruns:
        raise BenchError(f"run {run.uuid}: the rerun stored nothing")
    rerun = reruns[0]
    if rerun.suite_hash != run.suite_hash or rerun.eval_users_hash != run.eval_users_hash:
        raise BenchError(f"run {run.uuid}: the rerun's data fingerprint differs from the recorded one")
    old = store.per_user(run.id)
    new = Store(db).per_user(rerun.id)
    diffs = []
    for m in sorted(old, key=lambda n: list(run.metrics).index(n) if n in run.metrics else 99):
        if m not in new:
            continue
        d = np.abs(new[m] - old[m])
        diffs.append(MetricDiff(m, run.metrics[m], rerun.metrics[m], float(d.max(initial=0.0)), int((d > 0).sum())))
    return Reproduction(run, label, rerun, diffs)


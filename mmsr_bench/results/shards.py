"""One cell scored in user shards, merged into one run.

A long LLM cell (an hour of fitting, hours of scoring 1,000 users x 100 candidates on a CPU) may not fit one
machine's few hours. ``bench run --shard K/N`` scores only the K-th of N contiguous blocks of the frozen evaluation
users and stores it as a run with status ``shard`` (kept out of every table, exported and imported like any run, so
a shard made on one machine is kept for the next). When the store holds all N shards of one cell (same suite and
fingerprint, dataset, model, variant, configuration hash, seed), they are merged into one ``completed`` run: the
per-user vectors concatenated in shard order, which is the unsplit evaluation order, so the merged run has the
vectors an unsplit run has (``tests/test_shards.py``), and the aggregates are their means.
"""

from __future__ import annotations

import json
import logging
import uuid as uuid_mod

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation import metrics
from mmsr_bench.results.store import Run, Store

log = logging.getLogger(__name__)

SHARD = "shard"


def shard_info(run: Run) -> dict:
    info = json.loads(run.run_info_json or "{}").get("shard")
    if not isinstance(info, dict) or not {"index", "of", "start", "end"} <= set(info):
        raise BenchError(f"run {run.uuid}: status shard without a run_info.shard record")
    return info


def cell_key(run: Run) -> tuple:
    return (run.suite, run.suite_hash, run.dataset, run.model, run.variant, run.config_hash, run.seed,
            run.eval_users_hash)


def stored_shard(store: Store, run_like: Run, index: int, of: int) -> Run | None:
    """The stored shard ``index`` of ``of`` of this run's cell, if any (for ``--resume``)."""
    for r in store.runs(suite=run_like.suite, dataset=run_like.dataset, model=run_like.model, status=SHARD):
        info = shard_info(r)
        if cell_key(r) == cell_key(run_like) and info["of"] == of and info["index"] == index:
            return r
    return None


def _fit_identity(run: Run) -> object:
    """What must be equal across a cell's shards so that they scored one fitted model: the fitted weights' sha256
    where the adapter records it (fine-tuned LLMs), else the numerics record (threads, CPU kernels) under which a
    deterministic fit is repeated by each shard."""
    info = json.loads(run.run_info_json or "{}")
    if info.get("fitted_sha256"):
        return info["fitted_sha256"]
    return {k: v for k, v in (info.get("reproducibility") or {}).items() if k != "seed"}


def _check_one_fit(ordered: list[Run]) -> None:
    first = _fit_identity(ordered[0])
    for i, r in enumerate(ordered[1:], start=2):
        if _fit_identity(r) != first:
            raise BenchError(f"{r.model} on {r.suite}/{r.dataset} seed {r.seed}: shard {i} was scored by another fit "
                             f"than shard 1 ({_fit_identity(r)} vs {first}), so the shards cannot be merged into one "
                             "run; rerun the differing shards where the others ran (same fit, or same CPU and "
                             "threads)")


def merge_if_complete(store: Store, shard: Run) -> Run | None:
    """When every shard of ``shard``'s cell is stored, store and return their merge (once: a merge already stored
    is returned as it is); None while shards are missing."""
    of = shard_info(shard)["of"]
    key = cell_key(shard)
    parts: dict[int, Run] = {}
    for r in store.runs(suite=shard.suite, dataset=shard.dataset, model=shard.model, status=None):
        if cell_key(r) != key:
            continue
        if r.status == "completed":
            merged = json.loads(r.run_info_json or "{}").get("merged_from_shards")
            if merged and merged.get("of") == of:
                return r
        elif r.status == SHARD and shard_info(r)["of"] == of:
            parts[shard_info(r)["index"]] = r  # the latest of duplicates (runs come in id order)
    if len(parts) < of:
        log.info("%s on %s/%s seed %d: %d of %d shards stored", shard.model, shard.suite, shard.dataset, shard.seed,
                 len(parts), of)
        return None
    ordered = [parts[i] for i in range(of)]
    bounds = [(shard_info(r)["start"], shard_info(r)["end"]) for r in ordered]
    if bounds[0][0] != 0 or any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
        raise BenchError(f"{shard.model} on {shard.suite}/{shard.dataset} seed {shard.seed}: the stored shards cover "
                         f"{bounds}, not one contiguous range of users")
    _check_one_fit(ordered)
    vectors = [store.per_user(r.id) for r in ordered]
    names = sorted(vectors[0])
    if any(sorted(v) != names for v in vectors):
        raise BenchError(f"{shard.model} on {shard.suite}/{shard.dataset}: the shards stored different metrics")
    per_user = {m: np.concatenate([v[m] for v in vectors]) for m in names}
    n_users = bounds[-1][1]
    if any(len(v) != n_users for v in per_user.values()):
        raise BenchError(f"{shard.model} on {shard.suite}/{shard.dataset}: the shards' vectors do not add up to "
                         f"{n_users} users")
    info = json.loads(ordered[0].run_info_json)
    info.pop("shard", None)
    info["merged_from_shards"] = {
        "of": of, "runs": [r.uuid for r in ordered], "code_versions": sorted({r.code_version for r in ordered}),
        "hosts": sorted({r.host for r in ordered}), "fit_seconds": [r.fit_seconds for r in ordered],
        "score_seconds": [r.score_seconds for r in ordered],
        "fit_reused": [json.loads(r.run_info_json).get("fit_reused_from") is not None for r in ordered]}
    last = ordered[-1]
    merged = Run(
        uuid=uuid_mod.uuid4().hex, group_id=last.group_id, suite=last.suite, suite_hash=last.suite_hash,
        dataset=last.dataset, model=last.model, variant=last.variant, config_json=last.config_json,
        config_hash=last.config_hash, seed=last.seed, code_version=last.code_version,
        code_dirty=any(r.code_dirty for r in ordered), packages_json=last.packages_json, host=last.host,
        device=last.device, started_at=min(r.started_at for r in ordered),
        finished_at=max(r.finished_at for r in ordered), status="completed",
        peak_memory_mb=max(r.peak_memory_mb or 0.0 for r in ordered), n_users=n_users,
        eval_users_hash=last.eval_users_hash, run_info_json=json.dumps(info, default=str),
        fit_seconds=max(r.fit_seconds or 0.0 for r in ordered),
        score_seconds=sum(r.score_seconds or 0.0 for r in ordered),
        metrics_json=json.dumps(metrics.aggregate(per_user)))
    return store.add_run(merged, per_user)

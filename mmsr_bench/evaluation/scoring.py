"""Scoring a split with the metric engine (what a run reports, what validation and the conformance kit use) and
seeding a fit so the same seed gives the same numbers. Here, below the models and the runner, so both use one copy."""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Protocol

import numpy as np

from mmsr_bench import progress
from mmsr_bench.data.splits import EvalSplit, ScoreBatch
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation import metrics
from mmsr_bench.evaluation.training import evenly_spaced

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What scoring needs of a model: the adapter contract's ``score`` (:class:`mmsr_bench.models.adapter.Adapter`)."""

    def score(self, batch: ScoreBatch) -> np.ndarray: ...


#: The environment that pins every float32 CPU code path to one instruction set, so that x86 CPUs of different
#: makers and generations take the same kernels (``bench run --exact``): MKL's conditional numerical
#: reproducibility on its AVX2 path, ATen's own vectorized kernels at AVX2, oneDNN at most AVX2. All are read once,
#: when torch and MKL load, so they must be set before torch is imported. docs/results.md measures their cost.
EXACT_CPU_ENV = {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string: recorded with every run,
    because float32 results and timings depend on it."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def request_exact_cpu() -> dict[str, str]:
    """Set :data:`EXACT_CPU_ENV` for this process (``bench run --exact``); refuses when torch is already loaded
    with another instruction set, because then the setting could not take effect."""
    import sys

    for key, value in EXACT_CPU_ENV.items():
        os.environ[key] = value
    if "torch" in sys.modules:
        import torch

        if torch.backends.cpu.get_cpu_capability().lower() != "avx2":
            raise BenchError("--exact: torch was loaded before the exact-CPU settings could apply; run the command "
                             "in a fresh process, or export " + " ".join(f"{k}={v}" for k, v in
                                                                         EXACT_CPU_ENV.items()))
    return dict(EXACT_CPU_ENV)


def numerics_record() -> dict:
    """What decides float32 CPU results besides the seed and thread count: the CPU, the instruction set torch's
    kernels use, and the pinning variables when set (recorded in every run)."""
    info: dict = {"cpu": cpu_model()}
    pinned = {k: os.environ[k] for k in EXACT_CPU_ENV if k in os.environ}
    if pinned:
        info["pinned"] = pinned
        info["exact_cpu"] = pinned == EXACT_CPU_ENV
    return info


#: Seeds are integers in [0, SEED_LIMIT): what numpy's and torch's generators take.
SEED_LIMIT = 2 ** 32


def check_seeds(seeds, option: str = "--seed", *, at_least_one: bool = True) -> list[int]:
    """The one seed rule (run, sweep, study, tune): integers in [0, 2**32 - 1], each once, and at least one unless
    ``at_least_one`` is False; otherwise one error line naming ``option``."""
    seeds = list(seeds or [])
    if at_least_one and not seeds:
        raise BenchError(f"{option}: give one or more seeds")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT:
            raise BenchError(f"{option} {str(s)[:40]}: seeds must be integers in [0, 2**32 - 1]")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise BenchError(f"{option}: seed {twice[0]} is given twice")
    return seeds


def seed_everything(seed: int, torch_too: bool = True) -> dict:
    """Seed every generator and ask torch for deterministic kernels; returns what a run must record to be
    repeatable: the same seed gives the same numbers at the same torch thread count (CPU reductions are split by
    thread, so another thread count may change the last digits; docs/history/results-2026-12-06.md measures by how much)."""
    random.seed(seed)
    np.random.seed(seed)
    info: dict = {"seed": seed, **numerics_record()}
    if not torch_too:
        return info
    try:
        import torch
    except ImportError:
        return info
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.use_deterministic_algorithms(True, warn_only=True)
    info.update(torch_threads=torch.get_num_threads(), torch_deterministic=True,
                cpu_capability=torch.backends.cpu.get_cpu_capability())
    return info


def score_split(model: Scorer, split: EvalSplit, names: list[str], batch_size: int = 256,
                description: str = "scoring") -> dict[str, np.ndarray]:
    """Score every evaluation user on the shared candidates and return per-user metric vectors."""
    parts = []
    t0 = time.perf_counter()
    with progress.track(description, total=len(split)) as task:
        for i, batch in enumerate(split.batches(batch_size)):
            raw = model.score(batch)
            try:
                scores = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError):
                raise BenchError(f"{type(model).__name__}.score returned {type(raw).__name__}, not an array of "
                                 "numbers") from None
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


def evaluate_valid(model: Scorer, valid: EvalSplit, metric: str = "ndcg@10", batch_size: int = 256,
                   max_users: int | None = None) -> float:
    """Mean validation metric on the shared validation candidates, for an adapter that early-stops in its own loop
    (an adapter that trains in epochs hands its loop to :func:`mmsr_bench.evaluation.loop.fit_epochs` instead)."""
    vec = score_split(model, evenly_spaced(valid, max_users), [metric], batch_size, description="validating")[metric]
    return float(vec.mean())

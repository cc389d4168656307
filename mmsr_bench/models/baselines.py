"""Reference baselines every leaderboard needs: ``random`` (the floor) and ``pop`` (training popularity).

Both are exact and cheap. ``random`` derives each score from a hash of (seed, user, item), so a user's scores
do not depend on batch size, batch order or which other users are in the batch. ``pop`` ties are left as ties:
the metric engine scores ties by expected rank, so tied candidates are neither favoured nor penalised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mmsr_bench.data.splits import EvalSplit, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.models.adapter import Adapter, AdapterConfig, register

log = logging.getLogger(__name__)

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele et al. 2014): a well-mixed 64-bit hash, vectorised, wraps on overflow."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def hashed_uniform(seed: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) floats, one per (user, item), a pure function of (seed, user, item)."""
    u = np.asarray(users, dtype=np.int64).astype(np.uint64)
    i = np.asarray(items, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(0x5EED))
        h = _splitmix64(h ^ u)
        h = _splitmix64(h ^ i)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class RandomConfig(AdapterConfig):
    """No hyper-parameters: the seed comes from the run."""


@register()
class RandomAdapter(Adapter):
    """Uniform random scores: the chance floor (HR@K ~ K / #candidates)."""

    name = "random"
    uses_torch = False
    description = "Random scores from a hash of (seed, user, item): the chance-level floor"
    config_cls = RandomConfig

    def fit(self, train: TrainData, valid: EvalSplit) -> "RandomAdapter":
        self.run_info["scores"] = "splitmix64 hash of (seed, user, item), uniform in [0, 1)"
        self._fitted = True
        return self

    def score(self, batch: ScoreBatch) -> np.ndarray:
        if not getattr(self, "_fitted", False):
            raise BenchError("random: score() called before fit()")
        cands = np.asarray(batch.candidates)
        users = np.broadcast_to(np.asarray(batch.users, dtype=np.int64)[:, None], cands.shape)
        return hashed_uniform(int(self.seed), users, cands)


@dataclass(frozen=True)
class PopConfig(AdapterConfig):
    """No hyper-parameters."""


@register()
class PopAdapter(Adapter):
    """Most-popular: an item's score is its number of training interactions (same for every user)."""

    name = "pop"
    uses_torch = False
    description = "Training-set popularity (interaction counts); the classic non-personalised baseline"
    config_cls = PopConfig

    def __init__(self, config: AdapterConfig, *, seed: int = 0, device: str = "cpu", cache_dir: str = "") -> None:
        super().__init__(config, seed=seed, device=device, cache_dir=cache_dir)
        self._counts: np.ndarray | None = None

    def fit(self, train: TrainData, valid: EvalSplit) -> "PopAdapter":
        self._counts = train.item_popularity().astype(np.float64)
        self.run_info["n_train_interactions"] = int(self._counts.sum())
        self.run_info["n_items_seen"] = int((self._counts[1:] > 0).sum())
        return self

    def score(self, batch: ScoreBatch) -> np.ndarray:
        if self._counts is None:
            raise BenchError("pop: score() called before fit()")
        cands = np.asarray(batch.candidates, dtype=np.int64)
        if cands.size and (cands.min() < 0 or cands.max() >= len(self._counts)):
            raise BenchError(f"pop: candidate item ids must lie in 1..{len(self._counts) - 1}, "
                             f"got {cands.min()}..{cands.max()}")
        return self._counts[cands]

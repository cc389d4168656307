"""In-memory data model shared by loaders, the suite builder, the runner and every adapter.

Conventions (fixed, relied on everywhere):
- Items are integers ``1..n_items``; ``0`` is reserved for padding.
- Users are integers ``0..n_users-1`` (row order of the processed dataset); external ids are kept as strings.
- Sequences are time-ordered (position is time). Leave-one-out: ``seq[-1]`` is the test target, ``seq[-2]`` the
  validation target, ``seq[:-2]`` is training.
- In every candidate matrix column 0 holds the target; the metric engine relies on it and adapters must not.
  Ties never favour the target (see :mod:`mmsr_bench.evaluation.metrics`), so column order carries no information.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)

#: Columns an item table may carry. ``item`` (int, 1..n) is required; the others are optional text/image fields.
ITEM_TEXT_FIELDS = ("title", "brand", "categories", "description")
ITEM_COLUMNS = ("item", "ext_id", *ITEM_TEXT_FIELDS, "image", "image_description")


@dataclass(frozen=True)
class RawDataset:
    """What a loader returns: external ids, time-ordered sequences, optional ratings, and an item table.

    ``sequences[u]`` lists external item ids in time order. ``ratings[u]`` (same shape) or ``None``.
    ``items`` is a DataFrame indexed by external item id with any of the ITEM_TEXT_FIELDS plus ``image``
    (URL or local path) and ``image_description`` (synthetic reference description) where the source has them.
    """

    name: str
    user_ids: list[str]
    sequences: list[list[str]]
    items: pd.DataFrame
    ratings: list[list[float]] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.user_ids) != len(self.sequences):
            raise ValueError(f"{self.name}: {len(self.user_ids)} user ids but {len(self.sequences)} sequences")
        if self.ratings is not None and len(self.ratings) != len(self.sequences):
            raise ValueError(f"{self.name}: ratings and sequences differ in length")


@dataclass(frozen=True)
class ItemTable:
    """Item side information keyed by internal item id (``frame.index`` is 1..n_items). ``image_roots``: the folders
    local image files must lie in (a built suite sets its dataset folder plus any configured image root); ``None``
    for a table the caller assembled from its own paths."""

    frame: pd.DataFrame
    image_roots: tuple[Path, ...] | None = None

    @property
    def n_items(self) -> int:
        return len(self.frame)

    def has(self, column: str) -> bool:
        """True when the column exists and at least one item has a non-empty value."""
        if column not in self.frame.columns:
            return False
        col = self.frame[column]
        return bool(col.notna().any() and (col.astype(str).str.len() > 0).any())

    def text(self, item: int, fields: Sequence[str] = ("title",)) -> str:
        row = self.frame.loc[item]
        parts = [str(row[f]) for f in fields if f in row.index and isinstance(row[f], str) and row[f]]
        return " | ".join(parts)


@dataclass(frozen=True)
class PointwisePair:
    user: int
    item: int
    label: int  # 1 = the user's real next item, 0 = a sampled negative


@dataclass(frozen=True)
class TrainData:
    """Training interactions only: ``sequences[u]`` is ``seq[:-2]`` of user ``u``. No validation/test targets."""

    dataset: str
    n_items: int
    user_ids: list[str]
    sequences: list[np.ndarray]
    items: ItemTable
    seed: int = 0

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    def interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """All (user, item) training pairs as two aligned int arrays."""
        users = np.repeat(np.arange(self.n_users), [len(s) for s in self.sequences])
        items = np.concatenate(self.sequences) if self.sequences else np.zeros(0, dtype=np.int64)
        return users.astype(np.int64), items.astype(np.int64)

    def item_popularity(self) -> np.ndarray:
        """Training interaction counts per item, indexed 0..n_items (index 0 is padding, always 0)."""
        _, items = self.interactions()
        return np.bincount(items, minlength=self.n_items + 1).astype(np.int64)

    def pointwise_pairs(self, negatives_per_positive: int = 1, seed: int | None = None,
                        max_history: int = 50) -> list[tuple[np.ndarray, PointwisePair]]:
        """Balanced (history, candidate, label) examples for Yes/No recommenders, identical for every model.

        For every user and every training position ``t >= 1`` the history is ``seq[:t]`` (last ``max_history``
        items) and the positive is ``seq[t]``; each positive gets ``negatives_per_positive`` negatives drawn
        uniformly from items the user never interacted with in training. Deterministic in ``seed``.
        """
        rng = np.random.default_rng(self.seed if seed is None else seed)
        out: list[tuple[np.ndarray, PointwisePair]] = []
        for u, seq in enumerate(self.sequences):
            seen = set(seq.tolist())
            for t in range(1, len(seq)):
                hist = seq[max(0, t - max_history):t]
                out.append((hist, PointwisePair(u, int(seq[t]), 1)))
                for _ in range(negatives_per_positive):
                    while True:
                        neg = int(rng.integers(1, self.n_items + 1))
                        if neg not in seen:
                            break
                    out.append((hist, PointwisePair(u, neg, 0)))
        return out


@dataclass(frozen=True)
class EvalSplit:
    """One evaluation split (validation or test) on the shared, frozen candidates.

    ``histories[i]`` is what the model may look at for evaluation user ``users[i]``; ``candidates[i, 0]`` is the
    target. For the full-ranking protocol ``candidates`` is ``None`` and ``exclude[i]`` lists the items to mask
    (the user's earlier items, except the target itself).
    """

    name: str  # "valid" | "test"
    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray
    candidates: np.ndarray | None
    n_items: int
    exclude: list[np.ndarray] | None = None

    @property
    def full_ranking(self) -> bool:
        return self.candidates is None

    def __len__(self) -> int:
        return len(self.users)

    def shard_bounds(self, index: int, of: int) -> tuple[int, int]:
        """[start, end) of shard ``index`` (0-based) of ``of`` contiguous, near-equal blocks of the evaluation
        users in their frozen order; merging the shards in index order gives the unsplit order back."""
        if not (isinstance(of, int) and isinstance(index, int) and 1 <= of <= max(1, len(self.users))
                and 0 <= index < of):
            raise BenchError(f"shard {index + 1}/{of}: give K/N with 1 <= K <= N <= {len(self.users)} (the number "
                             f"of evaluation users)")
        n = len(self.users)
        return index * n // of, (index + 1) * n // of

    def shard(self, index: int, of: int) -> "EvalSplit":
        """The users of one shard (:meth:`shard_bounds`), with their histories, targets and candidates."""
        a, b = self.shard_bounds(index, of)
        return EvalSplit(self.name, self.users[a:b], self.histories[a:b], self.targets[a:b],
                         None if self.candidates is None else self.candidates[a:b], self.n_items,
                         None if self.exclude is None else self.exclude[a:b])

    def batches(self, batch_size: int) -> Iterator["ScoreBatch"]:
        all_items = np.arange(1, self.n_items + 1, dtype=np.int64)
        for start in range(0, len(self.users), batch_size):
            sl = slice(start, start + batch_size)
            n = len(self.users[sl])
            if self.candidates is None:
                cands = np.broadcast_to(all_items, (n, self.n_items))
            else:
                cands = self.candidates[sl]
            yield ScoreBatch(users=self.users[sl], histories=self.histories[sl], candidates=cands,
                             full_ranking=self.candidates is None, offset=start)


@dataclass(frozen=True)
class ScoreBatch:
    """What an adapter's ``score`` sees: users, their histories, and the shared candidates to score.

    ``candidates`` has shape (B, C). Under full ranking it is a read-only broadcast of ``1..n_items`` (the same
    row for every user) and ``full_ranking`` is True, so an adapter may compute all-item scores directly.
    Return a float array of shape (B, C); higher means more likely to be the next item.
    """

    users: np.ndarray
    histories: list[np.ndarray]
    candidates: np.ndarray
    full_ranking: bool = False
    offset: int = 0


@dataclass(frozen=True)
class FitContext:
    """Everything ``fit`` receives besides training data: validation split for early stopping, and a way to
    evaluate validation scores with the harness's own metric engine (never a library's evaluator)."""

    valid: EvalSplit
    seed: int
    device: str = "cpu"
    cache_dir: str = ""
    progress: object = None  # callable(description:str, total:int|None) -> context manager with .advance(n)
    extra: dict = field(default_factory=dict)

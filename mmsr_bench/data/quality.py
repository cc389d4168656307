"""Data-quality checks run at build time, recorded in the build, carried by every run and shown with the results.

Why: two properties of a raw dump silently make next-item numbers meaningless. A dump whose sequences are sorted by
item id (not by time) asks models to predict the next larger id; a dataset where the held-out test item is often
already in the user's history rewards copying. Both are measured as shares, so a few chance cases do not fire:
under time order a sequence of length L is strictly increasing with probability 1/L! (0.6-0.8% on the S3-Rec
Amazon files), while an id-sorted dump has a share near 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

#: A dataset is flagged as id-sorted when at least this share of its sequences (of >= 2 items) strictly increase.
SORTED_SHARE_LIMIT = 0.5
#: ... and as copy-prone when at least this share of evaluation users' test items is already in their history.
REPEAT_TARGET_LIMIT = 0.05


@dataclass(frozen=True)
class DataQuality:
    sorted_share: float
    n_sequences_checked: int
    repeat_target_share: float
    n_eval_users: int
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        return {**asdict(self), "warnings": list(self.warnings)}


def _ordered_keys(seq: Sequence[str]) -> list:
    """Integer ids compare as numbers, other ids (ASINs) as strings: what "sorted by id" means in the raw dump."""
    return [int(x) for x in seq] if all(str(x).isdigit() for x in seq) else [str(x) for x in seq]


def check(dataset: str, raw_sequences: Sequence[Sequence[str]], sequences: Sequence[np.ndarray],
          eval_users: np.ndarray) -> DataQuality:
    """Shares of strictly id-increasing raw sequences and of evaluation users whose test item repeats one of their
    earlier items, with one warning line per share above its limit."""
    multi = [s for s in raw_sequences if len(s) >= 2]
    n_sorted = 0
    for s in multi:
        keys = _ordered_keys(s)
        n_sorted += all(a < b for a, b in zip(keys, keys[1:]))
    sorted_share = n_sorted / len(multi) if multi else 0.0
    repeats = sum(int(sequences[u][-1] in set(sequences[u][:-1].tolist())) for u in eval_users)
    repeat_share = repeats / len(eval_users) if len(eval_users) else 0.0
    warnings = []
    if multi and sorted_share >= SORTED_SHARE_LIMIT:
        warnings.append(f"{dataset}: {sorted_share:.0%} of {len(multi)} sequences are strictly increasing by item id; "
                        "this looks like an id-sorted dump, not time order, so next-item numbers on it are "
                        "meaningless")
    if len(eval_users) and repeat_share >= REPEAT_TARGET_LIMIT:
        warnings.append(f"{dataset}: the test item of {repeat_share:.1%} of {len(eval_users)} evaluation users is "
                        "already in their history; models that copy the history are rewarded")
    return DataQuality(round(sorted_share, 6), len(multi), round(repeat_share, 6), len(eval_users), tuple(warnings))

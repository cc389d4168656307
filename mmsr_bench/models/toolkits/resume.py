"""Where an epoch-trained family's fit continues after its process died: one resume point per (model, configuration,
seed, training data, validation users) in the cache, held under a lock while a process trains into it.

The loop that writes and reads it is :func:`mmsr_bench.evaluation.loop.train_loop`; the LLM recommenders keep
theirs beside their adapter checkpoint (:mod:`mmsr_bench.models.toolkits.finetune`).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from mmsr_bench.data.splits import EvalSplit, TrainData
from mmsr_bench.evaluation.loop import Resumable, ResumePoint, fit_lock


def fit_fingerprint(adapter: Any, train: TrainData, valid: EvalSplit) -> str:
    """sha256 of what a fit depends on: the configuration hash, the seed, every training sequence and the
    validation users, histories and candidates (never a target)."""
    from mmsr_bench.models.adapter import config_hash

    h = hashlib.sha256(f"{config_hash(adapter)}|{adapter.seed}|{train.dataset}|{train.n_items}|".encode())
    for seq in train.sequences:
        h.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
    h.update(np.asarray(valid.users, dtype=np.int64).tobytes())
    for hist in valid.histories:
        h.update(np.asarray(hist, dtype=np.int64).tobytes() + b"|")
    if valid.candidates is not None:
        h.update(np.ascontiguousarray(valid.candidates, dtype=np.int64).tobytes())
    return h.hexdigest()


@contextmanager
def resumable_fit(adapter: Any, train: TrainData, valid: EvalSplit, parts: Resumable) -> Iterator[ResumePoint]:
    """The resume point of this fit (``checkpoints/<model>/<dataset>-<fingerprint>-s<seed>.resume`` in the cache,
    there only while a fit is unfinished), locked for the duration of the block, so two shards of one cell started
    together never write it at once."""
    from mmsr_bench.paths import cache_dir, check_safe_name

    fingerprint = fit_fingerprint(adapter, train, valid)
    name = check_safe_name(f"{train.dataset}-{fingerprint[:12]}-s{adapter.seed}.resume", "resume point name")
    folder = cache_dir("checkpoints", adapter.registered_name) / name
    with fit_lock(folder):
        yield ResumePoint(folder, fingerprint, parts)

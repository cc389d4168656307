"""What every training loop validates with and decides by: the :class:`Validator` (a metric of the harness metric
engine on the validation split), :class:`EarlyStopping` (patience, best-state snapshot and restore), the listener a
tuner hears validations through, and the one selection record every trained family writes. The loop itself is
:mod:`mmsr_bench.evaluation.loop`.

Also here: the validation sets adapters build from the harness split (:func:`valid_subset`,
:func:`evenly_spaced`, :func:`pointwise_validation_set`) and the balanced training-pair sample of the Yes/No
recommenders (:func:`balanced_subsample`), so no adapter imports another adapter.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from mmsr_bench.data.splits import EvalSplit, ScoreBatch
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.metrics import RankCounts, parse_metric, per_user_metrics, rank_counts, rank_counts_full

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- validation sets
def take_users(split: EvalSplit, idx: np.ndarray) -> EvalSplit:
    """``split`` restricted to the rows ``idx`` (same name, same candidates per user)."""
    return dataclasses.replace(
        split, users=split.users[idx], histories=[split.histories[i] for i in idx], targets=split.targets[idx],
        candidates=None if split.candidates is None else split.candidates[idx],
        exclude=None if split.exclude is None else [split.exclude[i] for i in idx])


def valid_subset(valid: EvalSplit, n_users: int, seed: int) -> EvalSplit:
    """The whole validation split, or a seeded random subsample of ``n_users`` of its users (in split order)."""
    if n_users <= 0 or n_users >= len(valid):
        return valid
    return take_users(valid, np.sort(np.random.default_rng(seed).choice(len(valid), n_users, replace=False)))


def evenly_spaced(valid: EvalSplit, max_users: int | None) -> EvalSplit:
    """The whole split, or ``max_users`` evenly spaced users of it (deterministic without a seed)."""
    if not max_users or len(valid) <= max_users:
        return valid
    return take_users(valid, np.linspace(0, len(valid) - 1, max_users).astype(np.int64))


def pointwise_validation_set(valid: EvalSplit, n_users: int, n_negatives: int, seed: int
                             ) -> tuple[EvalSplit, np.ndarray]:
    """A seeded subsample of validation users and their candidates (target in column 0) for early stopping of
    costly pointwise models: the shared validation candidates where the suite has them; under full ranking, the
    target plus ``n_negatives`` items the user has not seen (validation only, never test candidates)."""
    sub = valid_subset(valid, n_users, seed)
    if sub.candidates is not None:
        return sub, sub.candidates
    rng = np.random.default_rng(seed + 1)
    rows = []
    for hist, target in zip(sub.histories, sub.targets):
        seen = set(np.asarray(hist).tolist()) | {int(target)}
        pool = np.array([i for i in range(1, sub.n_items + 1) if i not in seen], dtype=np.int64)
        k = min(n_negatives, len(pool))
        rows.append(np.concatenate([[int(target)], rng.choice(pool, k, replace=False)]))
    width = min(len(r) for r in rows)
    return sub, np.stack([r[:width] for r in rows])


def balanced_subsample(pairs: list, max_pairs: int, seed: int, where: str) -> list:
    """At most ``max_pairs`` of the harness's (positive, negative) pairs, drawn as whole groups so the sample
    stays balanced, in their original order; seeded. Raises when there is no pair at all."""
    n_groups = len(pairs) // 2
    if n_groups == 0:
        raise BenchError(f"{where}: no training pairs (every user has < 2 training items)")
    groups = np.arange(n_groups)
    if max_pairs and 2 * n_groups > max_pairs:
        groups = np.sort(np.random.default_rng(seed).choice(n_groups, max(1, max_pairs // 2), replace=False))
    return [p for g in groups for p in pairs[2 * g:2 * g + 2]]


# ------------------------------------------------------------------------------------------------ scoring
def split_metric(score_fn: Callable[[ScoreBatch], np.ndarray], split: EvalSplit, metric: str,
                 batch_size: int = 256) -> float:
    """Mean ``metric`` of ``score_fn`` on ``split`` with the harness metric engine (sampled or full ranking).

    The batch size is part of the result's identity: scorers agree across batchings only to float tolerance,
    so each adapter keeps the one its stored runs used."""
    parts: list[RankCounts] = []
    for b in split.batches(batch_size):
        scores = np.asarray(score_fn(b), dtype=np.float64)
        if scores.shape != b.candidates.shape:
            raise BenchError(f"validation scores have shape {scores.shape}, expected {b.candidates.shape}")
        if split.full_ranking:
            sl = slice(b.offset, b.offset + len(b.users))
            exclude = split.exclude[sl] if split.exclude is not None else [np.zeros(0, np.int64)] * len(b.users)
            parts.append(rank_counts_full(scores, split.targets[sl], exclude))
        else:
            parts.append(rank_counts(scores))
    return float(np.mean(per_user_metrics(RankCounts.concat(parts), [metric])[metric]))


@dataclass(frozen=True)
class Validator:
    """How the loop scores a model: ``metric`` of ``score`` on ``split`` (the harness validation split, or a
    subsample of it) in batches of ``batch_size``."""

    split: EvalSplit
    metric: str
    score: Callable[[ScoreBatch], np.ndarray]
    batch_size: int = 256

    def __post_init__(self) -> None:
        parse_metric(self.metric)  # a typo fails before any training

    def __call__(self) -> float:
        return split_metric(self.score, self.split, self.metric, self.batch_size)


# ------------------------------------------------------------------------------------------- early stopping
def module_snapshot(module: Any) -> Callable[[], dict[str, Any]]:
    """A snapshot function for a torch module: every state tensor copied to CPU (restored with
    :func:`module_restore`); copies, so later optimizer steps never reach the kept state."""

    def snapshot() -> dict[str, Any]:
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

    return snapshot


def module_restore(module: Any) -> Callable[[dict[str, Any]], None]:
    def restore(state: dict[str, Any]) -> None:
        module.load_state_dict(state)

    return restore


@dataclass
class EarlyStopping:
    """Patience on a validation metric (bigger is better), with the best state kept.

    Only a strict improvement counts (``ties_improve=False``), unless an adapter's documented rule says that a tie
    is an improvement too (RecBole's ``early_stopping``: ``>=``, see :meth:`recbole`). Training stops once
    ``patience`` consecutive validations did not improve. The first validated state is always kept, so a restore
    never silently falls back to the last epoch's weights.
    """

    patience: int
    snapshot: Callable[[], Any] | None = None
    restore_fn: Callable[[Any], None] | None = None
    ties_improve: bool = False
    best: float = -math.inf
    best_epoch: int | None = None
    bad: int = 0
    state: Any = None

    @classmethod
    def recbole(cls, stopping_step: int, **kw: Any) -> "EarlyStopping":
        """RecBole 1.2.1's ``recbole.utils.early_stopping``: a tie updates the best, and it stops when the count of
        checks without improvement exceeds ``stopping_step`` (i.e. reaches ``stopping_step + 1``)."""
        return cls(patience=stopping_step + 1, ties_improve=True, **kw)

    def update(self, value: float, epoch: int) -> bool:
        """Record a validation value; True when it improved (and the state was kept)."""
        improved = value >= self.best if self.ties_improve else value > self.best
        if improved:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if improved or self.state is None:
            self.keep(epoch)
        return improved

    def keep(self, epoch: int) -> None:
        """Keep the current state as the chosen one (at ``epoch``) without touching the best value."""
        self.best_epoch = epoch
        if self.snapshot is not None:
            self.state = self.snapshot()

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience

    def restore(self) -> bool:
        """Load the kept state back; False when there is none (no validation ran)."""
        if self.state is None or self.restore_fn is None:
            return False
        self.restore_fn(self.state)
        return True


# ------------------------------------------------------------------------------------------ listening in
#: Who hears every validation of the training loop (:func:`mmsr_bench.evaluation.loop.train_loop`): a tuner reports the
#: values as a trial's intermediate curve and may raise from the listener to stop a poor trial early (pruning).
#: None outside tuning, so an ordinary run is untouched.
_listener: contextvars.ContextVar[Callable[[int, float], None] | None] = contextvars.ContextVar(
    "validation_listener", default=None)


@contextlib.contextmanager
def listening_to_validations(listener: Callable[[int, float], None]) -> Iterator[None]:
    """Inside the block, ``listener(step, value)`` is called after each validation of any training loop (``step``:
    the epoch, or the optimizer step of the LLM loop). An exception it raises propagates out of the fit."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def report_validation(step: int, value: float) -> None:
    """Tell the current listener (if any) about one validation; training loops call this once per validation."""
    listener = _listener.get()
    if listener is not None:
        listener(int(step), float(value))


# ----------------------------------------------------------------------------------- the selection record
#: Why a training loop stopped, in the record's words; the loops' older words map onto them (stored runs keep theirs).
STOPPED_BY = {"patience": "patience", "budget": "budget", "deadline": "deadline",
              "early_stopping": "patience", "max_epochs": "budget", "time_limit": "deadline"}


def selection_record(*, split: str, metric: str, value: float | None, unit: str, chosen: int | None,
                     last: int | None, stopped_by: str, n_validations: int) -> dict[str, Any]:
    """Which epoch or step a trained run kept, in the one schema every trained family writes as
    ``run_info["selection"]`` (read back by :func:`mmsr_bench.results.selection.selection`): ``unit`` ``epoch`` or
    ``step``, ``chosen`` and ``last`` (the last validated one) counted from 1, ``stopped_by`` patience | budget |
    deadline."""
    if unit not in ("epoch", "step"):
        raise BenchError(f"selection record: unit {unit!r} is neither epoch nor step")
    finite = value is not None and math.isfinite(float(value))
    return {"split": split, "metric": metric, "value": float(value) if finite else None, "unit": unit,
            "chosen": None if chosen is None else int(chosen), "last": None if last is None else int(last),
            "stopped_by": STOPPED_BY[stopped_by], "n_validations": int(n_validations)}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Training context: torch intra-op threads limited to ``n`` (0 = leave as is) and autograd anomaly detection
    off (importing RecBole turns it on globally, which makes every backward pass several times slower); both
    restored afterwards."""
    import torch

    old_threads = torch.get_num_threads()
    old_anomaly = (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled())
    if old_anomaly[0]:
        log.debug("autograd anomaly detection is on (RecBole enables it on import); off while training")
    torch.autograd.set_detect_anomaly(False)
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.autograd.set_detect_anomaly(*old_anomaly)


class TimeLimitExceeded(BenchError):
    """A fit or check ran past its stated time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` in the block once ``seconds`` of wall time have passed (a hung ``fit`` can
    no longer hang a run or the conformance kit). Uses ``SIGALRM``, so it acts only in the main thread of a POSIX
    process (every ``bench`` command and sweep worker); elsewhere, or with ``seconds`` None/0, it does nothing. A
    long native call (one torch op) is interrupted when it returns to Python."""
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):  # noqa: ARG001 - signal handler signature
        raise TimeLimitExceeded(f"{what} ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.getitimer(signal.ITIMER_REAL)  # an enclosing limit keeps running, and may be the tighter
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, min(float(seconds), outer) if outer else float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))

"""The harness-owned training loop (mmsr_bench.evaluation.training): the early-stopping rules, best-state restore, the run
record, the validation scorer against the runner's, and that no adapter module imports another adapter."""

from __future__ import annotations

import ast
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from mmsr_bench.data.splits import EvalSplit, ScoreBatch
from mmsr_bench.evaluation import scoring
from mmsr_bench.evaluation.training import (EarlyStopping, Validator, evenly_spaced, fit_epochs, split_metric,
                                            take_users, valid_subset)
from mmsr_bench.models import adapter
from mmsr_bench.models.adapter import Adapter
from mmsr_bench.runner import execute as runner

REPO = Path(__file__).resolve().parent.parent


def _split(n_users: int = 30, n_items: int = 25, n_cands: int = 8, full: bool = False, seed: int = 0) -> EvalSplit:
    rng = np.random.default_rng(seed)
    hists = [rng.choice(np.arange(1, n_items + 1), 4, replace=False) for _ in range(n_users)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(1, n_items + 1), h)) for h in hists])
    if full:
        return EvalSplit("valid", np.arange(n_users), hists, targets, None, n_items, exclude=list(hists))
    cands = np.stack([np.concatenate([[t], rng.choice(np.setdiff1d(np.arange(1, n_items + 1), [t]), n_cands - 1,
                                                      replace=False)]) for t in targets])
    return EvalSplit("valid", np.arange(n_users), hists, targets, cands, n_items)


def _hash_scores(batch: ScoreBatch) -> np.ndarray:
    """Deterministic per (user, item) scores, with ties (few distinct values)."""
    return ((batch.users[:, None] * 7 + np.asarray(batch.candidates) * 13) % 5).astype(np.float32)


class _Scorer(Adapter):
    def fit(self, train, valid):  # pragma: no cover - never called
        return self

    def score(self, batch: ScoreBatch) -> np.ndarray:
        return _hash_scores(batch)


@pytest.mark.parametrize("full", [False, True])
def test_split_metric_is_the_runners_metric_engine(full):
    split = _split(full=full)
    model = _Scorer(_Scorer.config_cls())
    for metric in ("ndcg@10", "hr@5", "mrr", "auc"):
        ours = split_metric(model.score, split, metric, batch_size=7)
        theirs = float(runner.score_split(model, split, [metric], batch_size=7)[metric].mean())
        assert ours == theirs
    assert Validator(split, "ndcg@10", model.score, 7)() == split_metric(model.score, split, "ndcg@10", 7)
    assert scoring.evaluate_valid(model, split, "mrr", 7, max_users=9) == split_metric(
        model.score, evenly_spaced(split, 9), "mrr", 7)


def test_validation_subsets():
    split = _split()
    assert valid_subset(split, 0, 1) is split and valid_subset(split, 30, 1) is split
    sub = valid_subset(split, 10, 1)
    assert len(sub) == 10 and np.all(np.diff(sub.users) > 0) and sub.name == "valid"
    assert np.array_equal(valid_subset(split, 10, 1).users, sub.users)  # seeded
    even = evenly_spaced(split, 4)
    assert even.users.tolist() == [0, 9, 19, 29] and evenly_spaced(split, None) is split
    part = take_users(split, np.array([3, 1]))
    assert part.users.tolist() == [3, 1] and np.array_equal(part.candidates[0], split.candidates[3])


def _recbole_rule(values: list[float], max_step: int) -> list[tuple[float, int, bool, bool]]:
    """recbole.utils.early_stopping (RecBole 1.2.1), copied verbatim for bigger=True."""
    out, best, cur = [], -math.inf, 0
    for value in values:
        stop = update = False
        if value >= best:
            cur, best, update = 0, value, True
        else:
            cur += 1
            if cur > max_step:
                stop = True
        out.append((best, cur, stop, update))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_recbole_rule_matches_recbole(seed):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, size=12).astype(float).tolist()  # many ties
    max_step = int(rng.integers(1, 4))
    stopper = EarlyStopping.recbole(max_step)
    for epoch, (value, (best, cur, stop, update)) in enumerate(zip(values, _recbole_rule(values, max_step))):
        assert stopper.update(value, epoch) == update
        assert (stopper.best, stopper.bad, stopper.should_stop and not update) == (best, cur, stop)


def test_recbole_rule_copy_is_recboles_own():
    pytest.importorskip("recbole")
    from recbole.utils import early_stopping

    import mmsr_bench.models.recbole_compat  # noqa: F401  (before any recbole import)

    rng = np.random.default_rng(3)
    values = rng.integers(0, 3, size=30).astype(float).tolist()
    best, cur = -math.inf, 0
    for value, expected in zip(values, _recbole_rule(values, 2)):
        best, cur, stop, update = early_stopping(value, best, cur, max_step=2, bigger=True)
        assert (best, cur, stop, update) == expected


def test_strict_rule_ties_do_not_count_and_first_state_is_kept():
    states = iter(range(100))
    stopper = EarlyStopping(2, snapshot=lambda: next(states))
    assert stopper.update(0.5, 1) and stopper.state == 0
    assert not stopper.update(0.5, 2) and stopper.bad == 1 and not stopper.should_stop
    assert not stopper.update(0.4, 3) and stopper.should_stop
    assert (stopper.best, stopper.best_epoch, stopper.state) == (0.5, 1, 0)
    first = EarlyStopping(1, snapshot=lambda: "s")
    assert not first.update(float("nan"), 1) and first.state == "s" and first.best_epoch == 1


class _Toy:
    """A 'model' whose state is one number; each epoch adds one; validation reads a scripted curve."""

    def __init__(self, curve: list[float]) -> None:
        self.w, self.curve, self.trained = 0, curve, []

    def train_epoch(self, epoch: int) -> float:
        self.w += 1
        self.trained.append(epoch)
        return 1.0 / epoch

    def score(self, batch: ScoreBatch) -> np.ndarray:
        # the target (column 0) beats a share of the negatives that follows the scripted curve
        value = self.curve[self.w - 1]
        cands = np.asarray(batch.candidates)
        scores = np.zeros(cands.shape)
        scores[:, 0] = value * cands.shape[1]
        scores[:, 1:] = np.arange(1, cands.shape[1])[None, :]
        return scores


def _stopper(toy: _Toy, patience: int, **kw) -> EarlyStopping:
    return EarlyStopping(patience, snapshot=lambda: toy.w, restore_fn=lambda w: setattr(toy, "w", w), **kw)


def test_loop_stops_on_patience_and_restores_the_best_epoch():
    toy = _Toy([0.2, 0.6, 0.6, 0.3, 0.9, 1.0])
    val = Validator(_split(), "auc", toy.score, 10)
    res = fit_epochs(toy.train_epoch, val, _stopper(toy, 2), epochs=6, description="toy")
    assert toy.trained == [1, 2, 3, 4] and res.epochs_run == 4 and res.stopped_by == "early_stopping"
    assert res.best_epoch == 2 and toy.w == 2 and res.split == "valid" and res.metric == "auc"
    assert [list(h) for h in res.history] == [["epoch", "loss", "auc"]] * 4
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4] and res.history[0]["loss"] == 1.0
    assert res.best_value == res.history[1]["auc"] and len(res.epoch_seconds) == 4
    # RecBole's rule: the tie at epoch 3 is an improvement, so epoch 3 is chosen
    toy = _Toy([0.2, 0.6, 0.6, 0.3, 0.9, 1.0])
    res = fit_epochs(toy.train_epoch, Validator(_split(), "auc", toy.score, 10), _stopper(toy, 1, ties_improve=True),
                     epochs=6)
    assert res.best_epoch == 3 and toy.w == 3


def test_loop_validates_every_k_epochs_and_after_the_last(caplog):
    toy = _Toy([0.1, 0.2, 0.3, 0.4, 0.5])
    with caplog.at_level(logging.INFO, logger="mmsr_bench.evaluation.training"):
        res = fit_epochs(toy.train_epoch, Validator(_split(), "auc", toy.score, 10), _stopper(toy, 1), epochs=5,
                         eval_every=2, description="toy")
    assert [h["epoch"] for h in res.history] == [2, 4, 5] and res.stopped_by == "max_epochs"
    assert res.best_epoch == 5 and toy.w == 5 and "best auc" in caplog.text


def test_loop_deadline_keeps_a_state():
    toy = _Toy([0.5, 0.6, 0.7])
    res = fit_epochs(toy.train_epoch, Validator(_split(), "auc", toy.score, 10), _stopper(toy, 1), epochs=3,
                     eval_every=5, deadline=0.0)
    assert res.stopped_by == "time_limit" and res.history == [] and res.best_epoch == 1 and toy.w == 1
    assert res.best_value == -math.inf


def test_no_adapter_module_imports_another_adapter():
    """Shared code lives in harness modules; mmsr_bench/models/recbole_compat.py is RecBole's shim, not an adapter."""
    allowed = {"mmsr_bench.models.recbole_compat"}
    families = {e.module for e in adapter.catalog().values()}
    for path in sorted((REPO / "mmsr_bench" / "models").glob("*.py")):
        if f"mmsr_bench.models.{path.stem}" not in families:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in families - {f"mmsr_bench.models.{path.stem}"})
                   and not any(n.startswith(a) for a in allowed)]
            assert not bad, f"{path.name}:{node.lineno} imports {bad[0]}"

"""The harness-owned training loop (mmsr_bench.evaluation.loop, with mmsr_bench.evaluation.training's rules): the
early-stopping rules, best-state restore, the deadline, resume points (every epoch-trained family resumes a killed fit
to the same scores), the run record, the validation scorer against the runner's, and that no adapter module imports
another adapter."""

from __future__ import annotations

import ast
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from mmsr_bench.data.splits import EvalSplit, ScoreBatch
from mmsr_bench.evaluation import scoring
from mmsr_bench.evaluation.loop import Resumable, ResumePoint, fit_epochs, train_loop
from mmsr_bench.evaluation.training import (EarlyStopping, Validator, evenly_spaced, split_metric, take_users,
                                            valid_subset)
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
    assert toy.trained == [1, 2, 3, 4] and res.done == 4 and res.stopped_by == "patience"
    assert res.chosen == 2 and toy.w == 2 and res.split == "valid" and res.metric == "auc" and res.unit == "epoch"
    assert [list(h) for h in res.history] == [["epoch", "loss", "auc", "valid_seconds", "elapsed_seconds"]] * 4
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4] and res.history[0]["loss"] == 1.0
    assert res.best_value == res.history[1]["auc"] and len(res.unit_seconds) == 4 and res.losses[3] == 0.25
    assert res.selection_record() == {"split": "valid", "metric": "auc", "value": res.best_value, "unit": "epoch",
                                      "chosen": 2, "last": 4, "stopped_by": "patience", "n_validations": 4}
    # RecBole's rule: the tie at epoch 3 is an improvement, so epoch 3 is chosen
    toy = _Toy([0.2, 0.6, 0.6, 0.3, 0.9, 1.0])
    res = fit_epochs(toy.train_epoch, Validator(_split(), "auc", toy.score, 10), _stopper(toy, 1, ties_improve=True),
                     epochs=6)
    assert res.chosen == 3 and toy.w == 3


def test_loop_validates_every_k_epochs_and_after_the_last(caplog):
    toy = _Toy([0.1, 0.2, 0.3, 0.4, 0.5])
    with caplog.at_level(logging.INFO, logger="mmsr_bench.evaluation.loop"):
        res = fit_epochs(toy.train_epoch, Validator(_split(), "auc", toy.score, 10), _stopper(toy, 1), epochs=5,
                         eval_every=2, description="toy")
    assert [h["epoch"] for h in res.history] == [2, 4, 5] and res.stopped_by == "budget"
    assert res.chosen == 5 and toy.w == 5 and "best auc" in caplog.text
    # the loss of a point is the mean over the epochs since the previous point
    assert res.history[0]["loss"] == (1.0 + 0.5) / 2 and res.history[2]["loss"] == 0.2


def test_loop_deadline_validates_the_state_it_stops_at():
    toy = _Toy([0.5, 0.6, 0.7])
    res = fit_epochs(toy.train_epoch, Validator(_split(), "auc", toy.score, 10), _stopper(toy, 1), epochs=3,
                     eval_every=5, deadline=0.0)
    assert res.stopped_by == "deadline" and [h["epoch"] for h in res.history] == [1] and res.chosen == 1
    assert toy.w == 1 and res.best_value == res.history[0]["auc"]


def test_loop_in_steps_without_validation_trains_every_step():
    toy = _Toy([0.5] * 4)
    res = train_loop(toy.train_epoch, None, _stopper(toy, 1), unit="step", total=4, metric="auc", split="valid")
    assert toy.trained == [1, 2, 3, 4] and res.history == [] and res.chosen is None and toy.w == 4
    assert res.selection_record()["unit"] == "step" and res.selection_record()["last"] is None


class _Cut(Exception):
    pass


def _torch_toy(tmp_path, fail_after: int | None, epochs: int = 6):
    """A linear model trained by Adam on batches drawn from a numpy generator, with dropout (torch's generator);
    the loop raises after epoch ``fail_after``, as a killed process would stop."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(5, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    rng = np.random.default_rng(1)
    X = torch.randn(64, 5, generator=torch.Generator().manual_seed(2))
    y = X @ torch.arange(1.0, 6.0)

    def step(n: int) -> float:
        if fail_after is not None and n == fail_after + 1:
            raise _Cut
        idx = torch.as_tensor(rng.choice(64, 16, replace=False))
        net.train()
        loss = ((net(X[idx]).squeeze(1) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    def validate() -> float:
        net.eval()
        with torch.no_grad():
            return -float(((net(X).squeeze(1) - y) ** 2).mean())

    stopper = EarlyStopping(10, lambda: {k: v.clone() for k, v in net.state_dict().items()}, net.load_state_dict)
    point = ResumePoint(tmp_path / "resume", "toy-v1", Resumable.of_module(net, opt, {"batches": rng}))
    res = train_loop(step, validate, stopper, unit="epoch", total=epochs, metric="neg_mse", split="valid",
                     eval_every=2, resume=point)
    return net, res


def test_a_killed_loop_resumes_to_the_same_weights(tmp_path):
    torch = pytest.importorskip("torch")
    ref_net, ref = _torch_toy(tmp_path / "ref", None)
    with pytest.raises(_Cut):
        _torch_toy(tmp_path / "cut", fail_after=3)
    assert (tmp_path / "cut" / "resume" / "state.safetensors").exists()
    net, res = _torch_toy(tmp_path / "cut", None)
    assert res.resumed_at == 3 and res.losses == ref.losses and res.history == [
        {**h, "valid_seconds": r["valid_seconds"], "elapsed_seconds": r["elapsed_seconds"]}
        for h, r in zip(ref.history, res.history)]
    assert res.chosen == ref.chosen and len(res.history) == 3
    for a, b in zip(net.state_dict().values(), ref_net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not (tmp_path / "cut" / "resume").exists()  # removed once the loop completed
    # a point of another fingerprint is ignored: training starts again from the first epoch
    with pytest.raises(_Cut):
        _torch_toy(tmp_path / "other", fail_after=3)
    other = ResumePoint(tmp_path / "other" / "resume", "toy-v2", Resumable.of_module(net, None))
    assert other.load() is None


def test_a_pruned_fit_leaves_no_resume_point(tmp_path):
    """A tuner that stops a trial from its validation listener stopped it on purpose: nothing is kept to resume."""
    from mmsr_bench.evaluation.training import listening_to_validations

    def prune(step: int, value: float) -> None:
        if step >= 4:
            raise _Cut

    with listening_to_validations(prune), pytest.raises(_Cut):
        _torch_toy(tmp_path, None)
    assert not (tmp_path / "resume").exists() and not (tmp_path / "resume.tmp").exists()


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gptrec", "mmgcn", "mmsr"])
def test_every_epoch_family_resumes_a_killed_fit_to_the_same_scores(name, tmp_path, monkeypatch):
    """A fit killed after its second validation, started again, continues from its resume point in the cache and
    ends with the scores, curve and chosen epoch of an uninterrupted fit (the kit slice, at the kit's tiny budget
    with at least four epochs)."""
    from mmsr_bench.models import conformance as kit_mod
    from mmsr_bench.evaluation import training

    kit = kit_mod.make_suite(tmp_path)
    overrides = {**kit_mod.tiny_overrides(name), "epochs": "4"}
    if name in ("sasrec", "bert4rec"):
        overrides["stopping_step"] = "10"
    else:
        overrides["patience"] = "10"
    with kit_mod._home(kit.home):
        data = kit_mod._load(kit)
        ref = kit_mod._fit(name, overrides, 0, kit, data)
        ref_scores = kit_mod._score_all(ref, data.test, 32)
        calls = []
        real_call = training.Validator.__call__

        def killed_at_third(self):
            calls.append(1)
            if len(calls) == 3:
                raise _Cut
            return real_call(self)

        monkeypatch.setattr(training.Validator, "__call__", killed_at_third)
        with pytest.raises(_Cut):
            kit_mod._fit(name, overrides, 0, kit, data)
        points = lambda: sorted((kit.home / "checkpoints" / name).glob("*.resume"))  # noqa: E731
        assert len(points()) == 1 and (points()[0] / "state.safetensors").exists()
        calls.clear()
        counted = lambda self: (calls.append(1), real_call(self))[1]  # noqa: E731
        monkeypatch.setattr(training.Validator, "__call__", counted)
        resumed = kit_mod._fit(name, overrides, 0, kit, data)
        assert len(calls) == 2  # validations 1-2 were not repeated: the fit continued after epoch 2
        assert points() == []  # removed once the fit completed
        scores = kit_mod._score_all(resumed, data.test, 32)
    sel, ref_sel = resumed.run_info["selection"], ref.run_info["selection"]
    assert sel == ref_sel and sel["n_validations"] == 4
    np.testing.assert_array_equal(scores, ref_scores)


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

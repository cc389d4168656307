"""The `random` and `pop` baselines: seeded, batch-size independent, popularity = training counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmsr_bench.data.splits import EvalSplit, ItemTable, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation import metrics
from mmsr_bench.models import adapter as adapter_mod
from mmsr_bench.models.baselines import PopAdapter, PopConfig, RandomAdapter, RandomConfig, hashed_uniform

N_ITEMS = 60


def _train(seqs: list[list[int]], n_items: int = N_ITEMS) -> TrainData:
    items = ItemTable(pd.DataFrame({"item": np.arange(1, n_items + 1)}).set_index("item", drop=False))
    return TrainData("toy", n_items, [f"u{i}" for i in range(len(seqs))],
                     [np.asarray(s, dtype=np.int64) for s in seqs], items)


def _split(n_users: int, n_cands: int = 21, seed: int = 0, full: bool = False) -> EvalSplit:
    rng = np.random.default_rng(seed)
    hist = [rng.integers(1, N_ITEMS + 1, size=5) for _ in range(n_users)]
    targets = rng.integers(1, N_ITEMS + 1, size=n_users)
    if full:
        return EvalSplit("test", np.arange(n_users), hist, targets, None, N_ITEMS,
                         exclude=[np.setdiff1d(h, [t]) for h, t in zip(hist, targets)])
    cands = np.stack([np.concatenate([[t], rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), [t]),
                                                      n_cands - 1, replace=False)]) for t in targets])
    return EvalSplit("test", np.arange(n_users), hist, targets, cands, N_ITEMS)


def _score_all(model, split: EvalSplit, batch_size: int) -> np.ndarray:
    return np.concatenate([model.score(b) for b in split.batches(batch_size)])


def _random(seed: int = 0) -> RandomAdapter:
    return RandomAdapter(RandomConfig(), seed=seed)


def _pop() -> PopAdapter:
    return PopAdapter(PopConfig())


def test_registered():
    reg = adapter_mod.registry()
    assert reg["random"].cls is RandomAdapter
    assert reg["pop"].cls is PopAdapter
    assert isinstance(adapter_mod.build("random", seed=2), RandomAdapter)


def test_hashed_uniform_is_a_pure_function():
    u = np.array([0, 0, 1, 2**40])
    i = np.array([1, 2, 1, 7])
    np.testing.assert_array_equal(hashed_uniform(5, u, i), hashed_uniform(5, u, i))
    assert len(set(hashed_uniform(5, u, i).tolist())) == 4
    assert hashed_uniform(5, u[:1], i[:1])[0] == hashed_uniform(5, u, i)[0]


def test_random_is_seeded_and_batch_size_independent():
    split = _split(37)
    train = _train([[1, 2, 3]])
    a = _random(3).fit(train, split)
    b = _random(3).fit(train, split)
    c = _random(4).fit(train, split)
    s1 = _score_all(a, split, batch_size=5)
    s2 = _score_all(b, split, batch_size=37)
    s3 = _score_all(a, split, batch_size=1)
    assert s1.shape == split.candidates.shape
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(s1, s3)
    assert not np.array_equal(s1, _score_all(c, split, batch_size=5))
    assert s1.min() >= 0.0 and s1.max() < 1.0
    # a user's scores depend on (seed, user, item) only, not on column position
    first = next(split.batches(37))
    row = a.score(first)[0]
    perm = first.candidates[0][::-1].copy()
    again = a.score(ScoreBatch(users=first.users[:1], histories=first.histories[:1], candidates=perm[None, :]))
    np.testing.assert_array_equal(again[0], row[::-1])


def test_random_is_at_chance_level():
    split = _split(3000, n_cands=21, seed=1)
    model = _random(0).fit(_train([[1, 2]]), split)
    per_user = metrics.evaluate_scores(_score_all(model, split, 256), ["hr@5", "auc"])
    agg = metrics.aggregate(per_user)
    assert abs(agg["hr@5"] - 5 / 21) < 0.03  # 3000 users: sd ~ 0.008
    assert abs(agg["auc"] - 0.5) < 0.03
    # roughly uniform values: ten equal bins each hold ~10 %
    hist, _ = np.histogram(_score_all(model, split, 256), bins=10, range=(0, 1))
    assert (np.abs(hist / hist.sum() - 0.1) < 0.02).all()


def test_random_full_ranking_shape():
    split = _split(9, full=True)
    model = _random(0).fit(_train([[1]]), split)
    batch = next(split.batches(4))
    assert batch.full_ranking
    assert model.score(batch).shape == (4, N_ITEMS)


def test_pop_ranks_by_training_counts():
    # item 5 x4, item 7 x3, item 2 x2, item 9 x1, others 0
    train = _train([[5, 5, 7, 2], [5, 7, 9], [5, 7, 2]])
    split = _split(4)
    model = _pop().fit(train, split)
    batch = next(split.batches(4))
    cands = np.array([[9, 5, 2, 7, 1]] * 2)
    scores = model.score(ScoreBatch(users=np.arange(2), histories=batch.histories[:2], candidates=cands))
    np.testing.assert_array_equal(scores[0], [1, 4, 2, 3, 0])
    np.testing.assert_array_equal(scores[0], scores[1])  # not personalised
    assert list(cands[0][np.argsort(-scores[0], kind="stable")]) == [5, 7, 2, 9, 1]
    assert model.run_info["n_train_interactions"] == 10
    # pop never sees validation or test targets: only TrainData counts
    np.testing.assert_array_equal(model.score(next(split.batches(4))),
                                  train.item_popularity()[next(split.batches(4)).candidates])


def test_pop_beats_random_when_targets_are_popular():
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, N_ITEMS + 1) ** 1.2
    weights /= weights.sum()
    seqs = [list(rng.choice(np.arange(1, N_ITEMS + 1), size=8, p=weights)) for _ in range(300)]
    targets = rng.choice(np.arange(1, N_ITEMS + 1), size=300, p=weights)
    cands = np.stack([np.concatenate([[t], rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), [t]), 20,
                                                      replace=False)]) for t in targets])
    split = EvalSplit("test", np.arange(300), [np.asarray(s) for s in seqs], targets, cands, N_ITEMS)
    train = _train(seqs)
    pop = metrics.aggregate(metrics.evaluate_scores(
        _score_all(_pop().fit(train, split), split, 64), ["ndcg@10"]))["ndcg@10"]
    rnd = metrics.aggregate(metrics.evaluate_scores(
        _score_all(_random(0).fit(train, split), split, 64), ["ndcg@10"]))["ndcg@10"]
    assert pop > rnd + 0.15


def test_pop_full_ranking_and_errors():
    train = _train([[1, 2, 2]])
    split = _split(3, full=True)
    model = _pop()
    with pytest.raises(BenchError, match="before fit"):
        model.score(next(split.batches(3)))
    model.fit(train, split)
    out = model.score(next(split.batches(3)))
    assert out.shape == (3, N_ITEMS)
    assert out[0, 1] == 2 and out[0, 0] == 1 and out[0, 2] == 0
    with pytest.raises(BenchError, match="candidate item ids"):
        model.score(ScoreBatch(users=np.arange(1), histories=[np.array([1])], candidates=np.array([[N_ITEMS + 5]])))

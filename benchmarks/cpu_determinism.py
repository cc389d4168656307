"""Cross-CPU determinism levers: one model fitted twice on this machine, with torch's default CPU kernels and with
`bench run --exact` (MKL_CBWR=AVX2,STRICT, ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2), each in a fresh
process with one torch thread, same seed. Prints each side's fit and scoring time, its metrics, the cost ratio, the
largest per-user difference between the two sides, and (--reference UUID) each side's largest per-user difference
against a reference run made on another machine.

    .venv/bin/python benchmarks/cpu_determinism.py [--suite synth4 --dataset baby --model sasrec] [--reference UUID]

What it shows: whether the pinning changes this CPU's results (it does when the default path differs from AVX2,
e.g. AVX-512 on this machine), and what it costs. Identity across CPUs is shown only by running it on both kinds of
machine (or by `bench reproduce` of an `--exact` reference run on the other kind).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def run_side(exact: bool, args, folder: Path) -> dict:
    db = f"sqlite:///{folder / ('exact.db' if exact else 'default.db')}"
    cmd = [sys.executable, "-m", "mmsr_bench.cli.main", "run", "--suite", args.suite, "--dataset", args.dataset,
           "--model", args.model, "--db", db] + (["--exact"] if exact else []) + sum((["--set", s] for s in args.set), [])
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from mmsr_bench.results.store import Store

    store = Store(db, read_only=True)
    run = store.runs()[0]
    return {"run": run, "vectors": store.per_user(run.id)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="synth4")
    ap.add_argument("--dataset", default="baby")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--reference", help="uuid of a reference run of the same cell made on another machine")
    args = ap.parse_args()
    from mmsr_bench.evaluation.scoring import cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        sides = {"default": run_side(False, args, Path(tmp)), "exact": run_side(True, args, Path(tmp))}
    print(f"CPU: {cpu_model()}; {args.model} on {args.suite}/{args.dataset}, seed 0, one torch thread")
    for name, side in sides.items():
        r = side["run"]
        rep = r.run_info.get("reproducibility", {})
        print(f"  {name:8s} fit {r.fit_seconds:7.1f} s  score {r.score_seconds:5.1f} s  kernels "
              f"{rep.get('cpu_capability', '?'):7s} hr@10 {r.metrics['hr@10']:.4f} ndcg@10 {r.metrics['ndcg@10']:.4f}"
              f"  auc {r.metrics['auc']:.4f}")
    for name, side in sides.items():
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(side["vectors"][m], dtype="<f8").tobytes()
                                         for m in sorted(side["vectors"]))).hexdigest()
        print(f"  {name:8s} per-user vectors sha256 {digest[:16]}  (equal digests on two machines = identical runs)")
    d, e = sides["default"], sides["exact"]
    print(f"  cost of --exact: fit x{e['run'].fit_seconds / d['run'].fit_seconds:.2f}")
    diff = max(float(np.abs(d["vectors"][m] - e["vectors"][m]).max()) for m in d["vectors"])
    print(f"  largest per-user difference default vs exact on this CPU: {diff:.3g}")
    if args.reference:
        from mmsr_bench.results import reference

        ref = reference.reference_store()
        run = next(r for r in ref.runs() if r.uuid.startswith(args.reference))
        vec = ref.per_user(run.id)
        cpu = run.run_info.get("reproducibility", {}).get("cpu", "unknown CPU")
        for name, side in sides.items():
            dd = max(float(np.abs(side["vectors"][m] - vec[m]).max()) for m in vec)
            print(f"  {name:8s} vs reference {run.uuid[:10]} ({cpu}, host {run.host}): largest per-user "
                  f"difference {dd:.3g}")
    print(json.dumps({k: v["run"].metrics for k, v in sides.items()}))


if __name__ == "__main__":
    main()

"""Benchmark: our metric engine vs ranx and RecBole's evaluator on one random score matrix.

Why: the harness computes HR/NDCG/Recall@{1,5,10,20}, MRR and AUC per user for every leaderboard cell, so the
engine must be both correct (numbers agree with the peers) and cheap (time and memory). This script builds one
seeded (users x candidates) score matrix with the target in column 0 and evaluates it with

* ours:    ``mmsr_bench.evaluation.metrics.rank_counts`` + ``per_user_metrics`` (exact tie expectation; no sorting);
* ranx:    ``ranx.evaluate(Qrels, Run, ..., return_mean=False)``; building the Qrels/Run objects from the matrix
           (Python dicts -> ranx's numba structures) is reported separately as "convert", and the evaluation is
           timed twice (first call loads numba's cached kernels; the second is warm);
* recbole: ``recbole.evaluator.metrics`` ``Hit/Recall/NDCG.metric_info`` on the ``pos_index`` matrix that
           RecBole's Collector builds with ``torch.topk`` (k = 20), ``MRR.metric_info`` on the full ranking
           (k = candidates, so it is the untruncated MRR) and ``GAUC.metric_info`` on the averaged tie ranks
           that the Collector computes (RecBole's GAUC is the user-averaged AUC; it returns only the mean).
           "convert" is the Collector-equivalent torch work (topk, gather, sort, average ranks).

Agreement: per-user values are compared with ours (max |difference|); GAUC is compared as a mean.

Peak memory: each engine runs in its own subprocess so that peak RSS is per engine. The default mode does
that itself: it re-invokes this script with ``--only ours|ranx|recbole`` (plus ``--only baseline``, which only
imports numpy and builds the matrix) under ``/usr/bin/time -v`` and parses "Maximum resident set size"; where
``/usr/bin/time`` is missing it reads the child's ``ru_maxrss`` from ``os.wait4``. To measure one engine by hand::

    /usr/bin/time -v .venv/bin/python benchmarks/metrics_vs_peers.py --users 100000 --candidates 101 --only ranx

Usage::

    .venv/bin/python benchmarks/metrics_vs_peers.py --users 100000 --candidates 101
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CUTOFFS = (1, 5, 10, 20)
ENGINES = ("ours", "ranx", "recbole")
CUTOFF_NAMES = [f"{m}@{k}" for m in ("hr", "ndcg", "recall") for k in CUTOFFS]
ALL_NAMES = CUTOFF_NAMES + ["mrr", "auc"]


def make_scores(users: int, candidates: int, seed: int) -> np.ndarray:
    """Continuous scores (no ties, so every engine's tie handling is irrelevant); the target gets a lift so that
    hits happen at every cutoff."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((users, candidates))
    scores[:, 0] += 1.5
    return scores


def run_ours(scores: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    from mmsr_bench.evaluation.metrics import per_user_metrics, rank_counts

    t0 = time.perf_counter()
    counts = rank_counts(scores)
    out = per_user_metrics(counts, ALL_NAMES)
    return {"convert": 0.0, "eval": time.perf_counter() - t0}, out


def run_ranx(scores: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    import ranx

    width = len(str(len(scores)))
    t0 = time.perf_counter()
    docs = [f"d{j}" for j in range(scores.shape[1])]
    qids = [f"q{i:0{width}d}" for i in range(len(scores))]  # zero-padded: ranx sorts query ids as strings
    qrels = ranx.Qrels({q: {"d0": 1} for q in qids})
    run = ranx.Run({q: dict(zip(docs, row)) for q, row in zip(qids, scores.tolist())})
    t1 = time.perf_counter()
    names = {f"{m}@{k}": f"{r}@{k}" for m, r in (("hr", "hit_rate"), ("ndcg", "ndcg"), ("recall", "recall"))
             for k in CUTOFFS}
    names["mrr"] = "mrr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba uint64 -> int64 cast notice inside ranx
        res = ranx.evaluate(qrels, run, list(names.values()), return_mean=False)
        t2 = time.perf_counter()
        ranx.evaluate(qrels, run, list(names.values()), return_mean=False)
        t3 = time.perf_counter()
    return ({"convert": t1 - t0, "eval": t2 - t1, "eval_warm": t3 - t2},
            {ours: np.asarray(res[theirs], dtype=np.float64) for ours, theirs in names.items()})


def _recbole_metrics():
    """Import RecBole's metric classes with numpy-2 aliases in place (the project shim if present)."""
    try:
        import mmsr_bench.models.recbole_compat  # noqa: F401  (adds np.float etc.)
    except Exception:  # noqa: BLE001 - the shim is optional here; fall back to the aliases RecBole needs
        for name, value in {"float": np.float64, "int": np.int_, "bool": np.bool_, "long": np.int_}.items():
            if name not in np.__dict__:
                setattr(np, name, value)
    from recbole.evaluator import metrics as rm
    from recbole.evaluator.collector import Collector

    return rm, Collector


def run_recbole(scores: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    import types

    import torch

    torch.set_num_threads(1)
    rm, Collector = _recbole_metrics()
    kmax, n_cand = max(CUTOFFS), scores.shape[1]
    cfg = {"metric_decimal_place": 12, "topk": list(CUTOFFS)}
    t0 = time.perf_counter()
    s = torch.from_numpy(scores)
    # Collector "rec.topk": top-k indices, the positive (column 0) marked, plus the number of positives
    _, topk_idx = torch.topk(s, kmax, dim=-1)
    pos_index = (topk_idx == 0).numpy()
    _, full_idx = torch.topk(s, n_cand, dim=-1)  # MRR over the whole list, to match the untruncated MRR
    pos_full = (full_idx == 0).numpy()
    pos_len = np.ones(len(scores), dtype=np.int64)
    # Collector "rec.meanrank": RecBole pads scores with -inf (item 0), and uses its index as the list length
    padded = torch.cat([s, torch.full((len(s), 1), -torch.inf, dtype=s.dtype)], dim=1)
    desc_scores, desc_index = torch.sort(padded, dim=-1, descending=True)
    avg_rank = Collector._average_rank(types.SimpleNamespace(device="cpu"), desc_scores)
    pos_rank_sum = torch.where(desc_index == 0, avg_rank, torch.zeros_like(avg_rank)).sum(dim=-1, keepdim=True)
    user_len = desc_scores.argmin(dim=1, keepdim=True).numpy()
    t1 = time.perf_counter()
    hit = rm.Hit(cfg).metric_info(pos_index)
    recall = rm.Recall(cfg).metric_info(pos_index, pos_len)
    ndcg = rm.NDCG(cfg).metric_info(pos_index, pos_len)
    mrr = rm.MRR(cfg).metric_info(pos_full)
    gauc = rm.GAUC(cfg).metric_info(pos_rank_sum.numpy(), user_len.squeeze(-1), pos_len)
    t2 = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    for k in CUTOFFS:
        out[f"hr@{k}"] = hit[:, k - 1].astype(np.float64)
        out[f"recall@{k}"] = recall[:, k - 1].astype(np.float64)
        out[f"ndcg@{k}"] = ndcg[:, k - 1].astype(np.float64)
    out["mrr"] = mrr[:, -1].astype(np.float64)
    out["auc_mean"] = np.array([gauc], dtype=np.float64)
    return {"convert": t1 - t0, "eval": t2 - t1}, out


RUNNERS = {"ours": run_ours, "ranx": run_ranx, "recbole": run_recbole}


def child(args: argparse.Namespace) -> None:
    """One engine in this process: time it and save timings (JSON) and per-user values (npz)."""
    scores = make_scores(args.users, args.candidates, args.seed)
    if args.only == "baseline":
        timings, values = {}, {}
    else:
        timings, values = RUNNERS[args.only](scores)
    if args.result:
        Path(args.result).write_text(json.dumps(timings))
        np.savez(Path(args.result).with_suffix(".npz"), **values)
    else:
        print(json.dumps({"engine": args.only, **timings, "means": {k: float(v.mean()) for k, v in values.items()}},
                         indent=1))


_RSS_RE = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


def _measure(engine: str, args: argparse.Namespace, tmp: Path) -> tuple[dict, dict, float]:
    """Run one engine in a child process; return (timings, per-user values, peak RSS in MiB)."""
    result = tmp / f"{engine}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", engine, "--users", str(args.users),
           "--candidates", str(args.candidates), "--seed", str(args.seed), "--result", str(result)]
    use_time = Path("/usr/bin/time").exists()
    if use_time:
        cmd = ["/usr/bin/time", "-v", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} child failed ({proc.returncode}):\n{out}\n{err[-4000:]}")
    if use_time:
        m = _RSS_RE.search(err)
        rss = int(m.group(1)) / 1024 if m else float("nan")
    else:  # pragma: no cover - depends on the host
        rss = float("nan")
    timings = json.loads(result.read_text())
    with np.load(result.with_suffix(".npz")) as z:
        values = {k: z[k] for k in z.files}
    return timings, values, rss


def _measure_wait4(engine: str, args: argparse.Namespace, tmp: Path) -> tuple[dict, dict, float]:
    """Fallback without /usr/bin/time: the child's own ru_maxrss from os.wait4 (kilobytes on Linux)."""
    result = tmp / f"{engine}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", engine, "--users", str(args.users),
           "--candidates", str(args.candidates), "--seed", str(args.seed), "--result", str(result)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} child failed ({proc.returncode})")
    timings = json.loads(result.read_text())
    with np.load(result.with_suffix(".npz")) as z:
        values = {k: z[k] for k in z.files}
    return timings, values, usage.ru_maxrss / 1024


def parent(args: argparse.Namespace) -> None:
    measure = _measure if Path("/usr/bin/time").exists() else _measure_wait4
    rows = {}
    with tempfile.TemporaryDirectory(prefix="metrics_bench_") as td:
        for engine in ("baseline", *args.engines):
            rows[engine] = measure(engine, args, Path(td))
            print(f"  ran {engine}", file=sys.stderr)
    print(f"\n{args.users} users x {args.candidates} candidates, metrics: hr/ndcg/recall@{list(CUTOFFS)}, mrr, auc")
    print(f"peak RSS of a child that only builds the matrix (baseline): {rows['baseline'][2]:.0f} MiB\n")
    ours_total = rows["ours"][0]["eval"]
    header = f"{'engine':<8} {'convert s':>10} {'eval s':>9} {'warm eval s':>12} {'total s':>9} {'total/ours':>11} " \
             f"{'peak RSS MiB':>13} {'- baseline':>11}"
    print(header)
    print("-" * len(header))
    for engine in args.engines:
        t, _, rss = rows[engine]
        total = t["convert"] + t["eval"]
        warm = f"{t['eval_warm']:.3f}" if "eval_warm" in t else "-"
        print(f"{engine:<8} {t['convert']:>10.3f} {t['eval']:>9.3f} {warm:>12} {total:>9.3f} "
              f"{total / ours_total:>11.1f} {rss:>13.0f} {rss - rows['baseline'][2]:>11.0f}")
    ours = rows["ours"][1]
    print("\nagreement with ours (max |per-user difference|):")
    worst = 0.0
    for engine in args.engines:
        if engine == "ours":
            continue
        vals = rows[engine][1]
        diffs = {k: float(np.max(np.abs(vals[k] - ours[k]))) for k in vals if k in ours}
        if "auc_mean" in vals:
            diffs["auc (mean vs GAUC)"] = float(abs(vals["auc_mean"][0] - ours["auc"].mean()))
        worst = max(worst, *diffs.values())
        print(f"  {engine:<8} " + ", ".join(f"{k}={v:.1e}" for k, v in diffs.items()))
    print("\nmeans (ours): " + ", ".join(f"{k}={ours[k].mean():.4f}" for k in ALL_NAMES))
    status = "AGREE" if worst < 1e-9 else "DISAGREE"
    print(f"\n{status}: largest difference {worst:.2e} (tolerance 1e-9)")
    if worst >= 1e-9:
        raise SystemExit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--candidates", type=int, default=101)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("baseline", *ENGINES), help="run one engine in this process (for /usr/bin/time)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines for the default mode")
    p.add_argument("--result", help=argparse.SUPPRESS)  # used by the parent to collect a child's results
    args = p.parse_args()
    if args.only:
        child(args)
    else:
        if "ours" not in args.engines:
            args.engines = ["ours", *args.engines]
        parent(args)


if __name__ == "__main__":
    main()

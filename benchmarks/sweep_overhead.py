"""What `bench sweep` costs and gains: per-cell overhead of the sweep engine against a plain loop of runner.run_one
for cheap cells (random, pop), and the speed-up of 2 workers over 1 for a CPU-bound cell (SASRec, a few epochs),
plus peak memory (driver and largest worker).

    .venv/bin/python benchmarks/sweep_overhead.py [--executor local|ray] [--epochs 3] [--users 2000]

Everything runs on a tiny generated two-dataset suite in a temporary MMSR_BENCH_HOME (nothing written elsewhere).
Both sides of each comparison run in this process, one after the other, on the same data and stores.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_suite(root: Path, users: int) -> Path:
    from tests.conftest import write_tiny_suite

    path = write_tiny_suite(root, n_users=users, n_items=200)
    text = path.read_text() + '\n[[datasets]]\nname = "seq2"\nsource = "sequence"\npath = "tiny.txt"\n' \
                              'items = "tiny_items.tsv"\n'
    path.write_text(text)
    os.environ["MMSR_BENCH_DATA"] = str(root / "data")
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    for name in ("seq", "seq2"):
        spec = suites.load_suite(str(path))
        suites.write_hashes(spec, name, build.materialize(spec, spec.dataset(name)))
    return path


def plain_loop(path: Path, models, seeds, db: str, overrides=None) -> float:
    from mmsr_bench.suites import build
    from mmsr_bench.runner import execute as runner
    from mmsr_bench.suites import spec as suites
    from mmsr_bench.results.store import Store

    spec = suites.load_suite(str(path))
    store = Store(db)
    t0 = time.perf_counter()
    for m in models:
        for name in ("seq", "seq2"):
            data = build.load(spec, name)
            for s in seeds:
                req = runner.RunRequest(spec, m, [name], [s], dict(overrides or {}), db)
                runner.run_one(req, data, s, "loop", store)
    return time.perf_counter() - t0


def swept(path: Path, models, seeds, db: str, executor: str, workers: int, overrides=None) -> float:
    from mmsr_bench.runner import sweep

    req = sweep.SweepRequest(str(path), models, None, seeds, dict(overrides or {}), db, executor, None, workers, 0)
    t0 = time.perf_counter()
    states = sweep.sweep(req)
    assert all(s.status == "done" for s in states), [(s.cell.key, s.error) for s in states if s.status != "done"]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--users", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    os.environ["MMSR_BENCH_HOME"] = str(tmp / "home")
    path = make_suite(tmp, args.users)
    import logging

    logging.basicConfig(level=logging.ERROR)
    if args.executor == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    cheap, seeds = ["random", "pop"], [0, 1, 2, 3]
    n = len(cheap) * 2 * len(seeds)
    t_loop = plain_loop(path, cheap, seeds, f"sqlite:///{tmp / 'loop.db'}")
    t_sweep1 = swept(path, cheap, seeds, f"sqlite:///{tmp / 's1.db'}", args.executor, 1)
    t_sweep2 = swept(path, cheap, seeds, f"sqlite:///{tmp / 's2.db'}", args.executor, 2)
    print(f"cheap cells (random, pop; {n} cells, {args.users} users x 2 datasets):")
    print(f"  plain loop            {t_loop:7.2f} s  ({t_loop / n * 1000:.0f} ms/cell)")
    print(f"  sweep, 1 worker       {t_sweep1:7.2f} s  overhead {(t_sweep1 - t_loop) / n * 1000:+.0f} ms/cell "
          f"(includes starting the worker)")
    print(f"  sweep, 2 workers      {t_sweep2:7.2f} s  overhead {(t_sweep2 - t_loop) / n * 1000:+.0f} ms/cell")

    ov = {"epochs": str(args.epochs)}
    heavy_seeds = [0, 1]
    m = 2 * len(heavy_seeds)
    t1 = swept(path, ["sasrec"], heavy_seeds, f"sqlite:///{tmp / 'h1.db'}", args.executor, 1, ov)
    t2 = swept(path, ["sasrec"], heavy_seeds, f"sqlite:///{tmp / 'h2.db'}", args.executor, 2, ov)
    print(f"CPU-bound cells (sasrec, epochs={args.epochs}; {m} cells) on {os.cpu_count()} cores:")
    print(f"  sweep, 1 worker       {t1:7.2f} s")
    print(f"  sweep, 2 workers      {t2:7.2f} s  speed-up x{t1 / t2:.2f}")
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS: driver {me:.0f} MiB, largest worker {kids:.0f} MiB")
    print(f"(scratch: {tmp})")


if __name__ == "__main__":
    main()

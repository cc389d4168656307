"""Size and speed of the portable run file format against two alternatives, on the runs of a store (or the reference
runs): what chose ``mmsr-bench.run/1`` (JSON metadata, per-user vectors as zlib+base64 float64 with their sha256).

    .venv/bin/python benchmarks/run_file_format.py [--db sqlite:///results.db | --reference]

Alternatives, each on the same runs in this process:
  plain JSON     vectors as JSON lists of floats (readable, diffable per value; the MTEB/BARS style)
  gzip JSON      the plain JSON file gzipped as a whole (small, but the metadata is no longer readable in git)
  ours           JSON metadata + zlib+base64 vectors (readable metadata, small vectors, exact float64)
Prints total bytes and bytes per run for each, and the wall time of exporting and importing every run with ours
(`bench store export` / `bench store import` into a new SQLite store), plus peak memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="a store URL (default: the reference runs)")
    ap.add_argument("--reference", action="store_true")
    args = ap.parse_args()
    from mmsr_bench.evaluation.scoring import cpu_model
    from mmsr_bench.results import reference, run_files
    from mmsr_bench.results.store import Store, decode_vector
    from mmsr_bench.results.store_copy import export_store, import_files

    url = args.db if args.db and not args.reference else reference.reference_url()
    store = Store(url, read_only=True)
    records, loose = run_files.read_store(store)
    n_values = sum(decode_vector(b).size for r in records for b in r.vectors.values())
    sizes = {"plain JSON": 0, "gzip JSON": 0, "ours": 0}
    for rec in records:
        ours = run_files.dump(run_files.record_document(rec)).encode()
        doc = run_files.record_document(rec)
        doc["per_user"] = {m: decode_vector(b).tolist() for m, b in rec.vectors.items()}
        plain = run_files.dump(doc).encode()
        sizes["plain JSON"] += len(plain)
        sizes["gzip JSON"] += len(gzip.compress(plain, 9))
        sizes["ours"] += len(ours)
    print(f"CPU: {cpu_model()}; {len(records)} runs, {n_values:,} per-user values, from {store.url}")
    for name, size in sizes.items():
        print(f"  {name:11s} {size / 1e6:8.2f} MB  {size / max(1, len(records)) / 1e3:8.1f} kB/run  "
              f"x{size / sizes['ours']:.2f} of ours")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep = export_store(url, Path(tmp) / "runs")
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        imp = import_files(Path(tmp) / "runs", f"sqlite:///{tmp}/new.db")
        t_import = time.perf_counter() - t0
    print(f"  export {rep.runs} runs: {t_export:.2f} s; import {imp.runs_copied} runs (every file validated): "
          f"{t_import:.2f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(json.dumps({"runs": len(records), "bytes": sizes, "export_s": t_export, "import_s": t_import}))


if __name__ == "__main__":
    main()

"""Startup cost of `bench models` and `bench run --model pop`: catalog lookup against importing every adapter.

    .venv/bin/python benchmarks/startup.py [--repeat 3]

Both sides run in fresh processes on the same machine, one after the other. "catalog" is what the commands do now:
`bench models` reads mmsr_bench/models/registry.toml, and `pop` imports only mmsr_bench.models.baselines. "every adapter" is the
earlier behaviour, where the first lookup imported all adapter modules (torch, RecBole, transformers) and
registered them. The script prints the median wall time, peak RSS and whether torch was imported, plus the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - t0, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "torch": "torch" in sys.modules}}))
"""

CASES = {
    "bench models (catalog)": "from typer.testing import CliRunner\nfrom mmsr_bench.cli.main import app\n"
                              "assert CliRunner().invoke(app, ['models']).exit_code == 0",
    "bench models (every adapter)": "from mmsr_bench.models import adapter\nadapter.registry()\n"
                                    "from typer.testing import CliRunner\nfrom mmsr_bench.cli.main import app\n"
                                    "assert CliRunner().invoke(app, ['models']).exit_code == 0",
    "bench run --model pop (catalog)": "from typer.testing import CliRunner\nfrom mmsr_bench.cli.main import app\n"
                                       "r = CliRunner().invoke(app, ['run', '--suite', 'synth4', '--model', 'pop', "
                                       "'--dataset', 'baby', '--db', 'sqlite:///{db}'])\nassert r.exit_code == 0",
    "bench run --model pop (every adapter)": "from mmsr_bench.models import adapter\nadapter.registry()\n"
                                             "from typer.testing import CliRunner\nfrom mmsr_bench.cli.main import app\n"
                                             "r = CliRunner().invoke(app, ['run', '--suite', 'synth4', '--model', "
                                             "'pop', '--dataset', 'baby', '--db', 'sqlite:///{db}'])\n"
                                             "assert r.exit_code == 0",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    db = tempfile.mkdtemp(prefix="startup-") + "/r.db"
    subprocess.run([sys.executable, "-c", PROBE.format(body=CASES["bench run --model pop (catalog)"].format(db=db))],
                   check=True, capture_output=True)  # builds synth4/baby once, outside the timings
    results = {}
    for name, body in CASES.items():
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", PROBE.format(body=body.format(db=db))], check=True,
                                 capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        results[name] = {"seconds": statistics.median(r["seconds"] for r in runs),
                         "rss_mib": max(r["rss_mib"] for r in runs), "torch": runs[0]["torch"]}
        r = results[name]
        print(f"{name:40s} {r['seconds']:6.2f} s  peak RSS {r['rss_mib']:6.0f} MiB  torch imported: {r['torch']}")
    for cmd in ("bench models", "bench run --model pop"):
        new, old = results[f"{cmd} (catalog)"], results[f"{cmd} (every adapter)"]
        print(f"{cmd}: {old['seconds'] / new['seconds']:.1f}x faster, {old['rss_mib'] / new['rss_mib']:.1f}x less "
              "peak memory than importing every adapter")


if __name__ == "__main__":
    main()

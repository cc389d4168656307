"""What `bench tune` costs per trial against the bare runs it makes: the same configurations fitted and scored on
the validation split by hand (build, seed, fit, the harness metric engine) in the same process, on the same data.

    .venv/bin/python benchmarks/tune_overhead.py [--suite synth4] [--dataset beauty] [--trials 4] [--epochs 2]

Side A: ``mmsr_bench.runner.tune.tune`` with ``--trials N`` (random sampler, no pruning, one worker) into a fresh
SQLite store in a temporary folder: sampling, the Optuna study and heartbeats in the store's database, the trial
rows. Side B: for each configuration the tuner chose, the bare steps alone. Printed: seconds of each side, the
per-trial overhead (A - B) / N and as a share of B (goal: under 5%), and the peak RSS of this process. SASRec is
tuned with the epoch cap fixed at ``--epochs`` so a trial costs seconds, after one warm-up fit that
neither side is charged with; the cache home is the caller's (the suite
must be built; `bench run --suite synth4 --model pop` builds it).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="synth4")
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    from mmsr_bench.evaluation.scoring import cpu_model, seed_everything
    from mmsr_bench.evaluation.training import split_metric
    from mmsr_bench.models import adapter
    from mmsr_bench.models.search_space import as_overrides
    from mmsr_bench.results.store import Store
    from mmsr_bench.runner import tune
    from mmsr_bench.suites import build
    from mmsr_bench.suites.spec import load_suite

    suite = load_suite(args.suite)
    data = build.load(suite, args.dataset)
    metric = suite.evaluation.primary
    fixed = {"epochs": str(args.epochs)}
    seed_everything(0, torch_too=True)  # warm-up: the first fit of a process pays one-time costs; neither side
    adapter.build("sasrec", {"epochs": "1"}, seed=0).fit(data.train, data.valid)  # should be charged with them
    with tempfile.TemporaryDirectory(prefix="tune-overhead-") as tmp:
        space = Path(tmp) / "space.toml"
        space.write_text("[sasrec]\nlearning_rate = { low = 1e-4, high = 1e-2, log = true }\n"
                         "hidden_dropout_prob = { low = 0.1, high = 0.5 }\n")
        db = f"sqlite:///{tmp}/r.db"
        req = tune.TuneRequest(args.suite, ("sasrec",), args.dataset, trials=args.trials, sampler="random",
                               pruner="none", db_url=db, fixed={"sasrec": fixed}, space_file=str(space))
        t0 = time.perf_counter()
        tune.tune(req, data=data)
        tuned_s = time.perf_counter() - t0
        store = Store(db)
        trials = [t for tu in store.tunings() for t in store.trials(tu.id)]
        bare_s, diffs = 0.0, []
        for t in trials:  # the bare steps each trial made, timed alone
            params = as_overrides(json.loads(t.params_json))
            t1 = time.perf_counter()
            seed_everything(0, torch_too=True)
            model = adapter.build("sasrec", {**fixed, **params}, seed=0)
            model.fit(data.train, data.valid)
            value = split_metric(model.score, data.valid, metric, batch_size=model.config.batch_size)
            bare_s += time.perf_counter() - t1
            diffs.append(abs(value - t.value))
    n = len(trials)
    per_trial = (tuned_s - bare_s) / n
    print(f"CPU: {cpu_model()}; SASRec on {args.suite}/{args.dataset}, {n} trials of {args.epochs} epochs")
    print(f"bench tune: {tuned_s:.2f} s; bare runs of the same configurations: {bare_s:.2f} s")
    print(f"overhead per trial: {per_trial:+.3f} s = {100 * (tuned_s - bare_s) / bare_s:+.1f}% of a bare trial "
          f"(goal: under 5%)")
    print(f"same validation values: max |diff| {max(diffs):.2e}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()

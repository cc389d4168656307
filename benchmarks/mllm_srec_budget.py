"""MLLM-SRec's learning curve at CPU budgets: the adapter's own ``fit`` on a cheap validation subsample.

Why: a full ``bench run`` of an MLLM-SRec variant on a synth4-lite dataset scores 300 users x 100 candidates with
the real LM after training, which costs about an hour of two cores, so budgets and settings cannot be searched that
way. This probe builds the registered variant with ``--set``-style overrides, runs only ``fit`` (the adapter's
prompts, examples, training loop and validation on a seeded sample of ``valid_users`` validation users with their
shared candidates) and prints the validation curve recorded in ``run_info``. Nothing touches the test split. It
also prints the keyword-overlap ceiling of the same prompts on those users (each candidate scored by how many
preference keywords its summary shares, ties by the metric engine's rule); ``--ceiling-only`` prints just that.

    python benchmarks/mllm_srec_budget.py --model mllm-srec-text --set backbone=smollm2-135m \\
        --set quantization=none --set summary_mode=template --set max_pairs=480 --set eval_every=10

Measured results are in docs/history/results-2026-12-06.md ("MLLM-SRec on SmolLM2: the CPU budget").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def keyword_ceiling(model, vsplit, vcands) -> dict[str, float]:
    """Validation AUC and NDCG@10 of scoring each candidate by its keyword overlap with the user's preference."""
    from mmsr_bench.evaluation.metrics import aggregate, evaluate_scores
    from mmsr_bench.models.toolkits.summaries import KeywordPreference

    rows = []
    for hist, row in zip(vsplit.histories, vcands):
        items = model._hist(hist, model.config.pref_history)
        pref = set(KeywordPreference.parse(model.pref("", [model.summaries[i] for i in items])))
        rows.append([float(len(pref & set(model.pref.keywords(model.target_text(int(i)))))) for i in row])
    return aggregate(evaluate_scores(np.asarray(rows), ["auc", "ndcg@10"]))


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k.upper()} {v:.3f}" for k, v in metrics.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="synth4-lite")
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--model", default="mllm-srec-text")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the curve and run_info here")
    ap.add_argument("--ceiling-only", action="store_true",
                    help="no LM training: print the keyword-overlap ceiling on the validation users (template "
                         "summaries; --set valid_users=0 for the whole validation split)")
    args = ap.parse_args()

    from mmsr_bench.models import adapter as registry
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    defaults = {"valid_users": "64", "eval_every": "10", "patience": "1000", "threads": "2"}
    overrides = {**defaults, **registry.parse_set_options(args.sets)}
    data = build.load(suites.load_suite(args.suite), args.dataset)
    model = registry.build(args.model, overrides, seed=args.seed)
    if args.ceiling_only:
        from mmsr_bench.models.toolkits.summaries import KeywordPreference

        model._prepare_items(data.train)
        if model._summary_mode != "template":
            sys.exit("error: --ceiling-only needs --set summary_mode=template (LLM summaries need the tuned LM)")
        model.pref = KeywordPreference.fit(model.summaries[1:], max_df=model.config.max_df, top_k=model.config.top_k)
        vsplit, vcands = model._validation_set(data.valid)
        print(f"{args.model} on {args.suite}/{args.dataset}, {len(vsplit)} validation users x {vcands.shape[1]} "
              f"candidates: keyword-overlap {_fmt(keyword_ceiling(model, vsplit, vcands))}")
        return
    t0 = time.perf_counter()
    model.fit(data.train, data.valid)
    seconds = time.perf_counter() - t0
    vsplit, vcands = model._validation_set(data.valid)
    ceiling = keyword_ceiling(model, vsplit, vcands)
    info = model.run_info
    curve = [(h["step"], round(h["auc"], 3), round(h.get("loss", float("nan")), 3)) for h in info["history"]]
    print(f"{args.model} {overrides} on {args.suite}/{args.dataset}")
    print(f"keyword-overlap ceiling of these prompts (validation subsample): {_fmt(ceiling)}")
    print("curve (step, validation AUC, mean loss):", curve)
    sel = info["selection"]
    print(f"best AUC {sel['value']:.3f} at step {sel['chosen']} of {info['steps']}; "
          f"{info['n_train_pairs']} pairs; fit {seconds:.0f} s (items {info['item_seconds']:.0f} s, "
          f"sft {info['sft_seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"overrides": overrides, "ceiling": ceiling, "curve": curve,
                                         "run_info": info}, indent=1, default=str))


if __name__ == "__main__":
    main()

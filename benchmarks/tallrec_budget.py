"""TALLRec's learning curve on a real backbone at CPU budgets: validation AUC every few steps, and the ceiling.

Why: a full ``bench run --model tallrec`` on a synth4-lite dataset costs about an hour of two cores, most of it
scoring 300 users x 100 candidates, so the training budget cannot be searched that way. This probe fine-tunes with
the adapter's own prompt, examples and loop (``mmsr_bench.models.tallrec`` and :func:`mmsr_bench.models.toolkits.finetune.sft_train`) and
validates on a cheap fixed subsample (``--valid-users`` validation users, target plus ``--valid-cands - 1`` of their
shared candidates), printing the curve. On synth suites it also prints the ceiling a text-only model can reach
there: scoring each candidate by how many of the user's last ``--history`` items share its planted text attribute
(an oracle, it reads the generator's latent attributes).

    python benchmarks/tallrec_budget.py --suite synth4-lite --dataset beauty --lr 1e-3 --pairs 512
    python benchmarks/tallrec_budget.py --modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \\
        --rank 16 --decision-loss 1.0 --lr 1e-3
    python benchmarks/tallrec_budget.py --train-mode full --lr 1e-4

Measured results are in docs/history/results-2026-12-06.md ("TALLRec on SmolLM2: the CPU budget").
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def oracle_auc(data, history: int) -> dict[str, float] | None:
    """The planted text signal's ceiling on a synth dataset (None for other sources)."""
    import pandas as pd

    from mmsr_bench.data import synth
    from mmsr_bench.evaluation.metrics import aggregate, evaluate_scores

    spec = data.suite.dataset(data.dataset)
    if spec.source != "synth":
        return None
    lat = synth.latent_attributes(spec.category or spec.name, spec.seed)
    codes = pd.factorize(lat.loc[data.items.frame["ext_id"].tolist(), "text_attr"])[0]
    attr = np.concatenate([[codes.max() + 1], codes])
    out = {}
    for split in (data.valid, data.test):
        rows = []
        for h, c in zip(split.histories, split.candidates):
            h = np.asarray(h)
            counts = np.bincount(attr[h[h > 0][-history:]], minlength=attr.max() + 1)
            rows.append(counts[attr[c]].astype(np.float64))  # ties: the metric engine's exact expectation
        out[split.name] = aggregate(evaluate_scores(np.stack(rows), ["auc", "ndcg@10"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="synth4-lite")
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--modules", default="q_proj,v_proj")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--train-mode", default="lora", choices=["lora", "full"])
    ap.add_argument("--decision-loss", type=float, default=0.0)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--history", type=int, default=5)
    ap.add_argument("--title-chars", type=int, default=40)
    ap.add_argument("--valid-users", type=int, default=64)
    ap.add_argument("--valid-cands", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from mmsr_bench.models.tallrec import build_prefix, build_suffix, quote
    from mmsr_bench.evaluation.training import balanced_subsample
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites
    from mmsr_bench.models.toolkits.backbones import load_backbone
    from mmsr_bench.models.toolkits.finetune import LoraSettings, SFTConfig, SFTExample, sft_train
    from mmsr_bench.models.toolkits.llm_scoring import ScoringOptions, yes_no_scores
    from mmsr_bench.evaluation.metrics import aggregate, evaluate_scores
    from mmsr_bench.models.toolkits.trainable import prepare_trainable

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    data = build.load(suites.load_suite(args.suite), args.dataset)
    ceiling = oracle_auc(data, args.history)
    if ceiling:
        print(f"text-attribute oracle (last {args.history} items): " +
              ", ".join(f"{k} AUC {v['auc']:.3f} NDCG@10 {v['ndcg@10']:.3f}" for k, v in ceiling.items()))
    tr = data.train
    titles = [""] + [quote(tr.items.text(i, ("title",)), args.title_chars) for i in range(1, tr.n_items + 1)]

    def hist_titles(h):
        h = np.asarray(h)
        return [titles[i] for i in h[h > 0][-args.history:]]

    bb = load_backbone(args.backbone, dtype="float32")
    torch.manual_seed(0)
    lora = LoraSettings(rank=args.rank, alpha=2 * args.rank, dropout=0.05, target_modules=tuple(args.modules.split(",")))
    model = prepare_trainable(bb.model, args.train_mode, lora, False)
    pairs = tr.pointwise_pairs(negatives_per_positive=1, seed=0, max_history=args.history)
    examples = [SFTExample(build_prefix(hist_titles(h)), build_suffix(titles[p.item]), "Yes." if p.label else "No.")
                for h, p in balanced_subsample(pairs, args.pairs, 0, "tallrec_budget")]
    v = data.valid
    rng = np.random.default_rng(1)
    users = rng.choice(len(v.histories), min(args.valid_users, len(v.histories)), replace=False)
    hists = [v.histories[u] for u in users]
    cands = [np.concatenate([[v.candidates[u][0]], rng.choice(v.candidates[u][1:], args.valid_cands - 1,
                                                              replace=False)]) for u in users]
    options = ScoringOptions(max_rows=128, users_per_batch=4, max_prefix_tokens=1024)
    t0 = time.perf_counter()

    def validate() -> float:
        scores = yes_no_scores(model, bb.tokenizer, [build_prefix(hist_titles(h)) for h in hists],
                               [[build_suffix(titles[int(i)]) for i in row] for row in cands], options=options,
                               output="logit")
        auc = aggregate(evaluate_scores(np.stack(scores), ["auc"]))["auc"]
        print(f"  {time.perf_counter() - t0:7.0f} s  validation AUC {auc:.4f}", flush=True)
        return auc

    print(f"{args.backbone} {args.train_mode} lr {args.lr} modules {args.modules} rank {args.rank} decision loss "
          f"{args.decision_loss}: {len(examples)} pairs, batch {args.batch}")
    validate()
    res = sft_train(model, bb.tokenizer, examples, SFTConfig(
        lr=args.lr, epochs=1, batch_size=args.batch, eval_every=args.eval_every, patience=10 ** 6, seed=0,
        decision_weight=args.decision_loss, decision_words=("Yes", "No")), validate=validate)
    print("curve (step, AUC, mean loss):", [(h["step"], round(h["auc"], 3), round(h["loss"], 3)) for h in res.history])
    print(f"{res.steps} steps in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

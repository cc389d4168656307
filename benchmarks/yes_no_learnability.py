"""Can a tiny backbone learn a Yes/No word-match rule with LoRA, and how does label noise change that?

Why: TALLRec and MLLM-SRec on ``tiny-*`` backbones must learn "Yes when the target shares a word with the user's
preference" from the harness's pointwise pairs, whose labels are noisy (a real next item often shares nothing
with the preference, a random negative sometimes does). This probe isolates that skill: a synthetic prompt
"User likes: w1, w2, ..." / "Target item: <synth4 title>" whose answer is Yes exactly when the (lower-cased) title
contains one of the liked words, with a share ``--noise`` of labels flipped. It fine-tunes the same way the
adapters do (:func:`mmsr_bench.models.toolkits.finetune.sft_train`, optional decision loss) and prints validation AUC every
``--eval-every`` steps, so settings (learning rate, pretraining, loss, case) can be compared in minutes.

Measured on this project's 2-core CPU machine (shared with two training runs; ``tiny-llama``, 300 pretraining
steps, LoRA r=8 on all projections, lr 1e-3, decision loss 1.0, 3,000 training prompts, batch 16, 3 epochs =
564 steps; AUC on 400 clean-label prompts):

- 8 distinct liked words, no noise: 0.78 / 0.86 / 0.94 after 188 / 376 / 564 steps;
- 8 words, 30% of labels flipped: 0.73 / 0.73 / 0.76;
- 30 distinct words, no noise: 0.57 / 0.61 / 0.62.

The model learns word-specific detectors rather than a general copy rule, so the number of distinct words
matters more than label noise; an earlier hand-written variant of this probe also showed that lr 3e-3 is
unstable and that keeping the titles' capitals (different tokens for the same word) slows learning.
MLLM-SRec's preference on synth4 draws on ~35 descriptive words with far noisier labels (see docs/history/results-2026-12-06.md).

    python benchmarks/yes_no_learnability.py --words 1 --noise 0.3 --epochs 10
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from mmsr_bench.suites import build
from mmsr_bench.suites import spec as suites
from mmsr_bench.models.toolkits.backbones import PretrainSpec, load_backbone
from mmsr_bench.models.toolkits.finetune import LoraSettings, SFTConfig, SFTExample, apply_lora, sft_train
from mmsr_bench.models.toolkits.llm_scoring import yes_no_scores

ALL_PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_examples(titles: list[str], vocab: list[str], n: int, n_words: int, noise: float,
                  rng: np.random.Generator) -> list[SFTExample]:
    out = []
    for _ in range(n):
        liked = [vocab[j] for j in rng.choice(len(vocab), n_words, replace=False)]
        title = titles[int(rng.integers(len(titles)))]
        label = any(w in title.lower().split() for w in liked)
        if rng.random() < noise:
            label = not label
        out.append(SFTExample(f"### Instruction:\nUser likes: {', '.join(liked)}\n",
                              f"Target item: {title}\n\n### Response:\n", "Yes." if label else "No."))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="beauty", help="synth4 dataset whose titles are used")
    ap.add_argument("--words", type=int, default=1, help="liked words per prompt")
    ap.add_argument("--noise", type=float, default=0.0, help="share of flipped labels")
    ap.add_argument("--vocab", type=int, default=8, help="how many distinct liked words exist")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--decision-loss", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--keep-case", action="store_true", help="keep the titles' capitals")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from sklearn.metrics import roc_auc_score

    data = build.load(suites.load_suite("synth4"), args.dataset)
    items = data.train.items
    titles = [str(items.text(i, ("title",))) for i in range(1, items.n_items + 1)]
    if not args.keep_case:
        titles = [t.lower() for t in titles]
    # liked words: title words in 10-20% of titles (synth4: the 8 text attributes, 12.5% each, and product nouns)
    df: dict[str, int] = {}
    for t in titles:
        for w in set(t.lower().replace(",", " ").split()):
            df[w] = df.get(w, 0) + 1
    band = [w for w, c in df.items() if 0.10 * len(titles) <= c <= 0.20 * len(titles) and w.isalpha()]
    vocab = sorted(sorted(band, key=lambda w: (-df[w], w))[:args.vocab])
    rng = np.random.default_rng(args.seed)
    train = make_examples(titles, vocab, args.train, args.words, args.noise, rng)
    valid = make_examples(titles, vocab, 400, args.words, 0.0, rng)  # clean labels: what was learned
    bb = load_backbone("tiny-llama", texts=titles + [train[0].prefix + train[0].suffix + "Yes. No."] * 5,
                       pretrain=PretrainSpec(steps=args.pretrain_steps, seed=args.seed), device="cpu", seed=args.seed)
    tok = bb.tokenizer
    model = apply_lora(bb.model, LoraSettings(rank=args.rank, alpha=2 * args.rank, dropout=0.0,
                                              target_modules=ALL_PROJ))
    y = np.array([ex.answer == "Yes." for ex in valid])

    def validate() -> float:
        s = yes_no_scores(model, tok, [ex.prefix for ex in valid], [[ex.suffix] for ex in valid], output="logit")
        return float(roc_auc_score(y, np.array([row[0] for row in s])))

    cfg = SFTConfig(lr=args.lr, epochs=args.epochs, batch_size=16, eval_every=args.eval_every, patience=1000,
                    seed=args.seed, decision_words=("Yes", "No"), decision_weight=args.decision_loss)
    t0 = time.perf_counter()
    res = sft_train(model, tok, train, cfg, validate=validate, description="probe")
    print(f"{len(vocab)} candidate words; positives in training {np.mean([e.answer == 'Yes.' for e in train]):.2f}")
    print("step  valid AUC (clean labels)")
    for h in res.history:
        print(f"{h['step']:>5}  {h['auc']:.3f}")
    print(f"{res.steps} steps in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

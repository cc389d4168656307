"""Item captioners compared on held-out items: ``effnet-smollm2`` (frozen real EfficientNet-Lite0 + frozen real
SmolLM2-135M-Instruct, a trained LLaVA-style projector; :mod:`mmsr_bench.models.toolkits.captioner`) against ``tiny-llava`` (a tiny
LLaVA from random weights, trained whole; :mod:`mmsr_bench.models.toolkits.vlm`).

Both are trained on the same dataset's (image, ``image_description``) pairs with the same held-out items
(:func:`mmsr_bench.models.toolkits.vlm.holdout_mask`, share ``--holdout``), and both answer :data:`mmsr_bench.models.toolkits.vlm.CAPTION_PROMPT`. Printed:
the projector's training loss curve, training time, held-out (and, as a fit check, training-item) attribute accuracy
by :func:`mmsr_bench.models.toolkits.captioner.attribute_accuracy`, the share of captions contradicting their reference
(:func:`mmsr_bench.results.hallucination.contradicts`) and seconds per caption (generation only, features cached, batches of
``--batch-caption``). Hyper-parameters are the registry defaults unless given; none were chosen on held-out items.

    python benchmarks/captioner.py --suite synth4-lite --dataset beauty

Measured results are in docs/history/results-2026-12-06.md ("Item captioning with real frozen towers").
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed_captions(fn, items: list, batch: int) -> tuple[list[str], float]:
    out, t0 = [], time.perf_counter()
    for s in range(0, len(items), batch):
        out.extend(fn(items[s:s + batch]))
    return out, time.perf_counter() - t0


def _report(name: str, caps: list[str], refs: list[str], seconds: float) -> dict:
    from mmsr_bench.models.toolkits.captioner import attribute_accuracy
    from mmsr_bench.results.hallucination import contradicts

    acc = attribute_accuracy(caps, refs)
    bad = float(np.mean([contradicts(c, r) for c, r in zip(caps, refs)]))
    print(f"  {name}: colour {acc['colour']:.3f}  shape {acc['shape']:.3f}  pattern {acc['pattern']:.3f}  "
          f"mean {acc['mean']:.3f}  all three {acc['all_three']:.3f}  contradicting {bad:.3f}  "
          f"({len(caps)} items, {seconds / max(1, len(caps)):.3f} s/caption)", flush=True)
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="synth4-lite")
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--steps", type=int, default=None, help="projector steps (default: the registry's)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--tokens", type=int, default=None, help="image tokens (default: the registry's)")
    ap.add_argument("--tiny-steps", type=int, default=400, help="tiny-llava steps (mllm-srec's vlm_steps default)")
    ap.add_argument("--holdout", type=float, default=0.25)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch-caption", type=int, default=32)
    ap.add_argument("--train-check", type=int, default=75, help="training items captioned as a fit check")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-tiny", action="store_true")
    args = ap.parse_args()

    import torch

    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites
    from mmsr_bench.models.toolkits.captioner import CAPTIONERS, build_captioner, image_feature_matrix
    from mmsr_bench.models.toolkits.captioner import load_vlm
    from mmsr_bench.models.toolkits.vlm import (CAPTION_PROMPT, TinyVLMSpec, _generate, _prompt_text, _read_rgb,
                                                holdout_mask)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mmsr_bench.models.toolkits.captioner").setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    data = build.load(suites.load_suite(args.suite), args.dataset)
    f = data.items.frame
    paths, refs = [str(p) for p in f["image"]], [str(d) for d in f["image_description"]]
    keys = [str(k) for k in (f["ext_id"] if "ext_id" in f.columns else f.index)]
    held = holdout_mask(keys, args.holdout)
    hold = np.flatnonzero(held)
    train_idx = np.flatnonzero(~held)[:args.train_check]
    print(f"{args.suite}/{args.dataset}: {len(paths)} items, {len(hold)} held out ({args.holdout:g})", flush=True)

    changes = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch), ("lr", args.lr),
                                 ("n_tokens", args.tokens)) if v is not None}
    spec = replace(CAPTIONERS["effnet-smollm2"], holdout=args.holdout, **changes)
    t0 = time.perf_counter()
    vlm = build_captioner("effnet-smollm2", paths, refs, keys, spec=spec)
    cap = vlm.captioner
    rec = cap.record
    losses = rec["losses"]
    print(f"effnet-smollm2 ({spec}): ready in {time.perf_counter() - t0:.0f} s; projector trained "
          f"{rec['train_seconds']:.0f} s ({rec['train_seconds'] / max(1, len(losses)):.2f} s/step, features "
          f"{rec['feature_seconds']:.1f} s) in an earlier or this run")
    w = max(1, len(losses) // 12)
    print("  loss curve (mean per %d steps): " % w
          + ", ".join(f"{s + w}:{np.mean(losses[s:s + w]):.3f}" for s in range(0, len(losses), w)))
    feats = image_feature_matrix(paths, spec.image_encoder)
    gen = lambda rows: cap.generate(feats[rows], CAPTION_PROMPT, args.max_new_tokens)  # noqa: E731
    caps, sec = _timed_captions(gen, list(hold), args.batch_caption)
    print("  held-out examples: " + " | ".join(f"{caps[i]!r} (ref {refs[hold[i]]!r})" for i in range(3)))
    results = {"effnet-smollm2": _report("effnet-smollm2 held-out", caps, [refs[i] for i in hold], sec)}
    tcaps, tsec = _timed_captions(gen, list(train_idx), args.batch_caption)
    _report("effnet-smollm2 training items", tcaps, [refs[i] for i in train_idx], tsec)

    if not args.skip_tiny:
        t0 = time.perf_counter()
        tiny = load_vlm("tiny-llava", image_paths=paths, descriptions=refs, keys=keys,
                        spec=TinyVLMSpec(train_steps=args.tiny_steps, holdout=args.holdout))
        print(f"tiny-llava ({args.tiny_steps} steps): ready in {time.perf_counter() - t0:.0f} s "
              f"(trained in this run unless cached); final loss {tiny.info['vlm_final_loss']:.3f}")
        prompt = _prompt_text(CAPTION_PROMPT)
        tgen = lambda rows: _generate(tiny, [_read_rgb(paths[i]) for i in rows], prompt,  # noqa: E731
                                      args.max_new_tokens)
        caps, sec = _timed_captions(tgen, list(hold), args.batch_caption)
        print("  held-out examples: " + " | ".join(f"{caps[i]!r} (ref {refs[hold[i]]!r})" for i in range(3)))
        results["tiny-llava"] = _report("tiny-llava held-out", caps, [refs[i] for i in hold], sec)
        tcaps, tsec = _timed_captions(tgen, list(train_idx), args.batch_caption)
        _report("tiny-llava training items", tcaps, [refs[i] for i in train_idx], tsec)
    if len(results) == 2:
        a, b = results["effnet-smollm2"]["mean"], results["tiny-llava"]["mean"]
        print(f"held-out mean attribute accuracy: effnet-smollm2 {a:.3f} vs tiny-llava {b:.3f} ({a - b:+.3f})")


if __name__ == "__main__":
    main()

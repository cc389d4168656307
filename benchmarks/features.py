"""Feature-extraction throughput (items/s), cold (empty cache) vs cached, on synthetic items.

Usage: ``python benchmarks/features.py [--category beauty] [--items 300] [--image-encoder open_clip:ViT-B-32]
[--threads 1]``. Items come from the synth4 generator (:func:`mmsr_bench.data.synth.generate`: titles, descriptions and
rendered PNGs). The cache lives in a temporary folder, so the numbers never depend on earlier runs. Image features
use random weights (no checkpoint offline): throughput is the same as with real weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from mmsr_bench.data.splits import ItemTable
from mmsr_bench.models.toolkits.features import image_features, text_features
from mmsr_bench.data.images import resolve_images


def synthetic_items(category: str, n_items: int, image_dir: Path) -> ItemTable:
    from mmsr_bench.data.synth import generate

    raw = generate(category, 0, image_dir)
    frame = raw.items.reset_index(drop=True).head(n_items)
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return ItemTable(frame)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--category", default="beauty")
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--text-encoder", default="all-MiniLM-L6-v2")
    ap.add_argument("--image-encoder", default="open_clip:ViT-B-32")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    results: dict = {"items": args.items, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = synthetic_items(args.category, args.items, tmp / "images")
        n = items.n_items
        t = time.perf_counter()
        report = resolve_images(items.frame, "bench", progress=False)
        results["resolve_images_per_s"] = round(n / (time.perf_counter() - t), 1)
        results["image_coverage"] = report.coverage
        # warm the encoders once (model load is not throughput)
        text_features(ItemTable(items.frame.head(2)), args.text_encoder, cache_root=tmp / "warm")
        image_features(ItemTable(items.frame.head(2)), [report.paths[1], report.paths[2]], args.image_encoder,
                       cache_root=tmp / "warm")
        for kind, fn in (("text", lambda root: text_features(items, args.text_encoder, cache_root=root)),
                         ("image", lambda root: image_features(items, report, args.image_encoder,
                                                               cache_root=root))):
            for phase in ("cold", "cached"):
                t = time.perf_counter()
                fm = fn(tmp / f"cache-{kind}")
                dt = time.perf_counter() - t
                results[f"{kind}_{phase}_items_per_s"] = round(int(fm.present.sum()) / dt, 1)
                results[f"{kind}_{phase}_seconds"] = round(dt, 3)
            results[f"{kind}_dim"] = fm.dim
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""A CLIP-style image-text space from real frozen encoders, trained the LiT way (Zhai et al., CVPR 2022).

Why: the hallucination analysis needs a space where an image and a sentence describing it are close, and no real
CLIP weights install offline. Both towers here are real and frozen: EfficientNet-Lite0's ImageNet features
(:mod:`mmsr_bench.models.toolkits.image_encoders`) for images and all-MiniLM-L6-v2 for text (the same features the models use, read
through the feature cache). Only two linear projection heads and a temperature are trained, with the symmetric
contrastive (InfoNCE) loss on (image, reference description) pairs of a dataset's items, item content only: no
interaction is involved. A seeded share of the pairs is held out, and the held-out image-to-text retrieval
accuracy is recorded so the space's quality is a number, not a claim.

The heads are saved as safetensors under ``cache_dir("clip", "lit-<hash>")`` with a JSON record. The hash covers
the encoders' weights, the training spec and every (image bytes, text) pair, and is checked when the heads are
loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mmsr_bench.data.splits import ItemTable
from mmsr_bench.errors import BenchError
from mmsr_bench.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LitSpec:
    image_encoder: str = "efficientnet-lite0"
    text_encoder: str = "all-MiniLM-L6-v2"
    dim: int = 128
    steps: int = 400
    batch_size: int = 128
    lr: float = 3e-3
    holdout: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class LitSpace:
    """Frozen towers plus trained heads; ``embed_*`` return L2-normalised rows of the shared space."""

    spec: LitSpec
    image_head: np.ndarray  # (image_dim + 1, dim): weights with the bias as the last row
    text_head: np.ndarray
    weights_sha256: str
    record: dict

    def _project(self, feats: np.ndarray, head: np.ndarray) -> np.ndarray:
        z = feats @ head[:-1] + head[-1]
        return z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)

    def embed_images(self, paths: Sequence[str]) -> np.ndarray:
        return self._project(_image_feats(paths, self.spec), self.image_head)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._project(_text_feats(texts, self.spec), self.text_head)


def _image_feats(paths: Sequence[str], spec: LitSpec) -> np.ndarray:
    from mmsr_bench.models.toolkits.features import image_features

    items = ItemTable(pd.DataFrame({"title": [f"i{k}" for k in range(len(paths))]}, index=range(1, len(paths) + 1)))
    fm = image_features(items, list(paths), spec.image_encoder)
    if not fm.present[1:].all():
        raise BenchError(f"LiT space: {int((~fm.present[1:]).sum())} of {len(paths)} images could not be read")
    return fm.values[1:].astype(np.float64)


def _text_feats(texts: Sequence[str], spec: LitSpec) -> np.ndarray:
    from mmsr_bench.models.toolkits.features import text_features

    items = ItemTable(pd.DataFrame({"title": list(texts)}, index=range(1, len(texts) + 1)))
    fm = text_features(items, spec.text_encoder, fields=("title",))
    if not fm.present[1:].all():
        raise BenchError("LiT space: every text must be non-empty")
    return fm.values[1:].astype(np.float64)


def _key(paths: Sequence[str], texts: Sequence[str], spec: LitSpec) -> str:
    h = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    for p, t in zip(paths, texts):
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
        h.update(str(t).encode("utf-8"))
    return h.hexdigest()


def fit_lit(image_paths: Sequence[str], texts: Sequence[str], spec: LitSpec = LitSpec(),
            trained_on: str = "") -> LitSpace:
    """Train (or load from the cache) the projection heads on aligned (image, text) pairs."""
    import torch
    from safetensors.torch import load_file, save_file

    if len(image_paths) != len(texts) or len(texts) < 8:
        raise BenchError(f"LiT space: needs at least 8 aligned (image, text) pairs, got {len(image_paths)} images "
                         f"and {len(texts)} texts")
    key = _key(image_paths, texts, spec)
    folder = cache_dir("clip", f"lit-{key[:16]}")
    heads, meta = folder / "heads.safetensors", folder / "lit.json"
    if heads.is_file() and meta.is_file():
        record = json.loads(meta.read_text())
        digest = hashlib.sha256(heads.read_bytes()).hexdigest()
        if record.get("heads_sha256") == digest and record.get("key") == key:
            t = load_file(str(heads))
            return LitSpace(spec, t["image_head"].numpy(), t["text_head"].numpy(), digest, record)
        log.warning("LiT space %s: heads differ from their record; training them again", folder)
    img = torch.as_tensor(_image_feats(image_paths, spec), dtype=torch.float32)
    txt = torch.as_tensor(_text_feats(texts, spec), dtype=torch.float32)
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(texts))
    n_hold = int(round(spec.holdout * len(texts)))
    hold, train = order[:n_hold], order[n_hold:]
    torch.manual_seed(spec.seed)
    wi = torch.nn.Linear(img.shape[1], spec.dim)
    wt = torch.nn.Linear(txt.shape[1], spec.dim)
    log_scale = torch.nn.Parameter(torch.tensor(np.log(10.0), dtype=torch.float32))
    opt = torch.optim.AdamW([*wi.parameters(), *wt.parameters(), log_scale], lr=spec.lr, weight_decay=1e-4)
    # identical texts (several items with one description) are all positives of each other
    codes = torch.as_tensor(pd.factorize(pd.Series([str(t) for t in texts]))[0])
    loss = torch.tensor(float("nan"))
    for _ in range(spec.steps):
        idx = torch.as_tensor(rng.choice(train, min(spec.batch_size, len(train)), replace=False))
        zi = torch.nn.functional.normalize(wi(img[idx]), dim=-1)
        zt = torch.nn.functional.normalize(wt(txt[idx]), dim=-1)
        logits = log_scale.clamp(max=np.log(100.0)).exp() * zi @ zt.T
        same = (codes[idx][:, None] == codes[idx][None, :]).float()
        same = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits, same)
                      + torch.nn.functional.cross_entropy(logits.T, same))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def head(layer: torch.nn.Linear) -> torch.Tensor:
        return torch.cat([layer.weight.detach().T, layer.bias.detach()[None]]).contiguous()

    tensors = {"image_head": head(wi), "text_head": head(wt)}
    space = LitSpace(spec, tensors["image_head"].numpy(), tensors["text_head"].numpy(), "", {})
    retrieval = None
    if n_hold >= 2:
        zi = space._project(img[hold].double().numpy(), space.image_head)
        zt = space._project(txt[hold].double().numpy(), space.text_head)
        best = (zi @ zt.T).argmax(1)
        retrieval = float(np.mean(codes.numpy()[hold][best] == codes.numpy()[hold]))
    save_file(tensors, str(heads))
    digest = hashlib.sha256(heads.read_bytes()).hexdigest()
    record = {"key": key, "heads_sha256": digest, "spec": asdict(spec), "n_pairs": len(texts), "n_holdout": n_hold,
              "holdout_indices": sorted(int(i) for i in hold),
              "holdout_image_to_text_accuracy": retrieval, "final_loss": float(loss.detach()),
              "trained_on": trained_on, "chance_accuracy": round(1.0 / max(1, len(set(map(str, texts)))), 6)}
    meta.write_text(json.dumps(record, indent=1))
    log.info("LiT space trained on %d pairs: held-out image->text accuracy %s", len(texts), retrieval)
    return LitSpace(spec, space.image_head, space.text_head, digest, record)

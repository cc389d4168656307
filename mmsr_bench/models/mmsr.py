"""MMSR (Hu, Guo, Liu and Kan, "Adaptive Multi-Modalities Fusion in Sequential Recommendation Systems", CIKM 2023,
arXiv 2308.15980), written against the harness contract from the paper and the authors' public code (HoldenHu/MMSR).

Model. Each item's frozen modality features (text, image) are clustered with k-means; an item is linked to its
``codes_per_item`` nearest cluster codes per modality, and code nodes start from (PCA-projected, rescaled) cluster
centroids, then are learned, as in the paper. A user's history becomes a graph whose nodes are the items in order
plus their modality code nodes. Homogeneous edges (same node type) carry sequential order (previous / next
position) and shared codes (two history items with the same code); heterogeneous edges cross-link an item with its
own modality nodes and those with each other. Each layer runs dual attention: a relation-aware content attention
over homogeneous neighbours (one attention vector per relation, GAT-style) and a type-aware query/key/value
attention over heterogeneous neighbours. The update gate lets every node choose its fusion order: it computes
both orders, heterogeneous-then-homogeneous (early fusion: modalities fused before sequence propagation) and
homogeneous-then-heterogeneous (late fusion: each modality propagated along the sequence first), and mixes them
with a learned per-node softmax gate. Readout: position-aware attention pooling over the item nodes (the paper's
"attention" pooling), mean pooling over each modality's nodes, a linear fusion of [item; text; image]; candidates are
scored by the inner product with the same fusion applied to the item's ID embedding and its codes' embeddings.
Missing modalities are handled as in the paper: an item without a modality simply has no nodes of that kind.

Training: cross-entropy over all items on every training prefix (``seq[:t] -> seq[t]`` for ``t >= 1``), Adam with
L2, early stopping on the harness validation split (``valid_metric``), keeping the best epoch's weights.

Deviations (CPU budget / harness contract), all configurable:
- Nodes are per position (item t and its codes), not de-duplicated per user; the paper's node merging for a shared
  code or a repeated item is expressed by a "shared code" homogeneous relation between the slots instead.
- ``codes_per_item`` = 1, ``n_clusters`` = 64 (clipped to the number of items with the modality / 2), one
  propagation layer, embedding 64, ``max_len`` = 20 most recent items, dropout 0.2: smaller than the paper's
  settings so that a 2,000-user dataset trains in minutes on 2 CPU cores.
- The update gate mixes the two orders softly (per node softmax) rather than a hard choice; this matches the
  authors' released code (``asy_mask`` fusion), not a discrete asynchronous schedule.
- Scores are scaled cosines (``logit_scale`` = 12, as in NISER) instead of raw inner products: with the fusion
  layer on both sides, raw inner products start near a saddle (all logits ~0) and CE training started slowly on
  CPU budgets; ``--set logit_scale=0`` restores the plain inner product.
- The ``id`` modality is always on (item nodes carry ID embeddings, as in the paper); ``modalities`` selects the
  feature modalities (``text``, ``image``). Image features are EfficientNet-Lite0's ImageNet features by default
  (``image_encoder="open_clip:<config>"`` selects an open_clip tower, random unless ``clip_weights`` is given);
  ``run_info["random_init"]`` records which.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from mmsr_bench.data.splits import ITEM_TEXT_FIELDS, EvalSplit, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.loop import Resumable
from mmsr_bench.models.adapter import AdapterConfig, Needs, register
from mmsr_bench.models.search_space import Range
from mmsr_bench.models.toolkits.feature_adapter import FeatureAdapter
from mmsr_bench.models.toolkits.features import FeatureMatrix

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class MMSRConfig(AdapterConfig):
    batch_size: int = 256
    embedding_size: int = 64
    max_len: int = 20
    n_layers: int = 1
    n_clusters: int = 64
    codes_per_item: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    l2: float = 1e-5
    epochs: int = 60
    patience: int = 5
    logit_scale: float = 12.0  # scores = scale * cosine(sequence, item); 0 = plain inner product
    valid_metric: str = "ndcg@10"
    modalities: str = "id,text,image"
    text_encoder: str = "all-MiniLM-L6-v2"
    text_fields: tuple[str, ...] = ITEM_TEXT_FIELDS
    image_encoder: str = "efficientnet-lite0"  # real ImageNet weights; "open_clip:<config>" selects CLIP

    #: Ranges around MMSR's published setting (Hu et al. 2024: Adam lr 1e-3, dropout 0.2, L2 1e-5): lr and L2 one
    #: or two decades either side on a log scale, dropout 0.1-0.5, 1-2 propagation layers.
    search_space: ClassVar[Mapping[str, Any]] = {
        "lr": Range(1e-4, 1e-2, log=True),
        "l2": Range(1e-7, 1e-3, log=True),
        "dropout": Range(0.1, 0.5),
        "n_layers": Range(1, 2),
    }
    clip_weights: str = ""
    allow_network: bool = True
    threads: int = 0
    eval_batch_size: int = 512


def _cluster_codes(fm: FeatureMatrix, n_clusters: int, k: int, dim: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """k-means codes per item: (codes (n_items+1, k) with 0 = none, code init (n_codes+1, dim), row 0 padding)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    items = np.flatnonzero(fm.present)
    x = fm.values[items]
    c = int(max(2, min(n_clusters, len(items) // 2)))
    if len(items) < 4:
        raise BenchError(f"only {len(items)} items have this modality; MMSR needs at least 4 to cluster")
    km = KMeans(n_clusters=c, n_init=3, random_state=seed).fit(x)
    dist = km.transform(x)  # (n, c)
    k = min(k, c)
    nearest = np.argsort(dist, axis=1)[:, :k] + 1
    codes = np.zeros((fm.values.shape[0], k), dtype=np.int64)
    codes[items] = nearest
    centres = km.cluster_centers_
    proj = PCA(n_components=min(dim, c, centres.shape[1]), random_state=seed).fit_transform(centres)
    init = np.zeros((c + 1, dim), dtype=np.float32)
    init[1:, : proj.shape[1]] = proj
    lo, hi = init[1:].min(), init[1:].max()
    std = 1.0 / math.sqrt(dim)  # the authors' normalize_array: rescale into [-1/sqrt(d), 1/sqrt(d)]
    if hi > lo:
        init[1:] = (init[1:] - lo) * (2 * std) / (hi - lo) - std
    return codes, init


def _left_pad(seqs: list[np.ndarray], L: int) -> np.ndarray:
    out = np.zeros((len(seqs), L), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = np.asarray(s, dtype=np.int64)[-L:]
        if len(s):
            out[r, L - len(s):] = s
    return out


@register()
class MMSR(FeatureAdapter):
    """Graph-based adaptive multimodal fusion for sequential recommendation (dual attention + update gate)."""

    name = "mmsr"
    #: the conformance kit's tiny budget (and the study's ``--budget tiny``), inherited by variants
    conformance_overrides = {"epochs": "1", "image_encoder": "open_clip:ViT-S-32", "threads": "1", "n_clusters": "4"}
    config_cls = MMSRConfig
    needs = Needs(text=True, images=True)
    description = "MMSR (Hu et al., CIKM 2023): per-user modality graph, dual attention, adaptive fusion order"

    def __init__(self, config: MMSRConfig, *, seed: int = 0, device: str = "cpu", cache_dir: str = "") -> None:
        super().__init__(config, seed=seed, device=device, cache_dir=cache_dir)
        self.net = None  # the network (mmsr_bench.models.toolkits.mmsr_net.MMSRNet) once fitted
        self._items = None  # its item table (a tensor), refreshed after every epoch

    def recorded_modalities(self, feats: dict[str, FeatureMatrix]) -> list[str]:
        return ["id", *feats]

    def _examples(self, train: TrainData) -> tuple[np.ndarray, np.ndarray]:
        L = self.config.max_len
        hist, tgt = [], []
        for s in train.sequences:
            for t in range(1, len(s)):
                hist.append(s[max(0, t - L):t])
                tgt.append(s[t])
        if not tgt:
            raise BenchError(f"{train.dataset}: no training sequence has 2 or more items")
        return _left_pad(hist, L), np.asarray(tgt, dtype=np.int64)

    def _fit(self, train: TrainData, valid: EvalSplit, feats: dict[str, FeatureMatrix]) -> None:
        import torch
        import torch.nn.functional as F

        from mmsr_bench.models.toolkits.mmsr_net import MMSRNet

        cfg: MMSRConfig = self.config
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        codes, inits = {}, {}
        for m, fm in feats.items():
            codes[m], inits[m] = _cluster_codes(fm, cfg.n_clusters, cfg.codes_per_item, cfg.embedding_size, self.seed)
        self.net = MMSRNet(train.n_items, codes, inits, cfg).to(self.device)
        X, y = self._examples(train)
        lengths = (X > 0).sum(1)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.l2)
        t0 = time.perf_counter()
        gate_hist = []

        def train_epoch(epoch: int) -> float:
            self.net.train()
            total, gsum, nb = 0.0, torch.zeros(2), 0
            for idx in self._length_buckets(lengths, rng):
                seqs = torch.as_tensor(X[idx], device=self.device)
                target = torch.as_tensor(y[idx], device=self.device)
                rep, gate = self.net(seqs)
                logits = self._logits(rep, self.net.item_table()[1:])
                loss = F.cross_entropy(logits, target - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                gsum += gate.detach().cpu()
                nb += 1
            gate_hist.append((gsum / max(nb, 1)).tolist())
            self._refresh()
            return total / len(y)

        parts = Resumable.of_module(self.net, opt, {"batches": rng}, extra=lambda: {"gate_hist": gate_hist},
                                    load_extra=lambda extra: gate_hist.extend(extra["gate_hist"]))
        loop = self._train_epochs(train_epoch, train, valid, parts, self.net, f"mmsr {train.dataset}")
        self._refresh()
        best_epoch = loop.chosen or 0
        self.run_info.update(
            train_examples=int(len(y)), train_seconds=round(time.perf_counter() - t0, 2),
            n_clusters={m: int(inits[m].shape[0] - 1) for m in inits},
            update_gate_late_early=gate_hist[best_epoch - 1] if best_epoch >= 1 else None)

    def _length_buckets(self, lengths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Shuffled batches of similar history length, so a batch pays only for its longest history."""
        perm = rng.permutation(len(lengths))
        perm = perm[np.argsort(lengths[perm], kind="stable")]
        bs = self.config.batch_size
        batches = [perm[i:i + bs] for i in range(0, len(perm), bs)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def _logits(self, rep, items):
        """Inner products, or NISER-style scaled cosines (see ``logit_scale``) of shape (B, n_items) (tensors)."""
        import torch.nn.functional as F

        if self.config.logit_scale > 0:
            rep = F.normalize(rep, dim=-1) * self.config.logit_scale
            items = F.normalize(items, dim=-1)
        return rep @ items.T

    def _refresh(self) -> None:
        import torch

        self.net.eval()
        with torch.no_grad():
            self._items = self.net.item_table()

    def score(self, batch: ScoreBatch) -> np.ndarray:
        if self.net is None or self._items is None:
            raise BenchError("mmsr: score() called before fit()")
        import torch

        seqs = torch.as_tensor(_left_pad(list(batch.histories), self.config.max_len), device=self.device)
        self.net.eval()
        with torch.no_grad():
            rep, _ = self.net(seqs)
            full = self._logits(rep, self._items)  # (B, n_items + 1); column 0 is padding
            if batch.full_ranking:
                return full[:, 1:].cpu().numpy()
            cands = torch.as_tensor(np.asarray(batch.candidates, dtype=np.int64), device=self.device)
            return torch.gather(full, 1, cands).cpu().numpy()


@dataclass(frozen=True)
class MMSRTextConfig(MMSRConfig):
    modalities: str = "id,text"


@register()
class MMSRText(MMSR):
    """``mmsr-text``: id + text only, for datasets with item text but no images (Beauty, Toys)."""

    name = "mmsr-text"
    config_cls = MMSRTextConfig
    needs = Needs(text=True)
    description = "MMSR with id + text modalities (no images)"

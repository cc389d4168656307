"""MMGCN (Wei et al., "MMGCN: Multi-modal Graph Convolution Network for Personalized Recommendation of
Micro-video", ACM MM 2019), written against the harness contract; MMRec (enoche/MMRec) is the reference for details.

Model (as in the paper and MMRec): one graph-convolution branch per content modality over the user-item bipartite
graph built from TRAINING interactions only. In branch m, items start from their frozen features projected by an MLP
(``latent_size``), users from a learned modality-specific preference vector; each layer does mean aggregation over
neighbours (``h = LeakyReLU(mean_j W x_j)``), a combination with the node's own projected state plus the shared ID
embedding (``x_hat = LeakyReLU(L x) + e_id``), and ``x = LeakyReLU(G h + x_hat)`` (``concat=False``, the paper's
default) or ``G [h; x_hat]`` (``concat=True``). The user and item representations are the mean of the branch
outputs (MMRec), and a candidate's score is the user-item inner product (not sequential: the history in a
ScoreBatch is ignored for known users). Loss: BPR with one uniformly sampled unseen negative per positive plus an
L2 penalty on the ID and preference embeddings used in the batch.

Modalities (``modalities``, default ``id,text,image``): ``text`` = sentence-encoder embeddings of the item text
fields, ``image`` = EfficientNet-Lite0 ImageNet features by default (``image_encoder``; ``open_clip:<config>``
selects an open_clip tower, random weights unless ``clip_weights`` is given, and then ``run_info["random_init"]``
is True). ``id`` adds the shared ID embedding to every branch (the paper's ``has_id``);
with ``id`` alone the model is a single branch whose item "features" are a learned embedding (a LightGCN-like ID
baseline). A requested modality the dataset lacks raises :class:`mmsr_bench.errors.MissingModality` before training.

Deviations (CPU budget / benchmark protocol):
- Early stopping on the harness validation split (``valid_metric``, default NDCG@10, patience ``patience``
  epochs), not on MMRec's own evaluator; the best epoch's weights are kept.
- One latent size (``latent_size`` = 256, MMRec's visual setting) for every feature branch; the paper used modality-
  specific sizes for its micro-video features. Optimiser Adam, lr 1e-3, reg 1e-5 (MMRec's search space).
- Users absent from training (none under leave-one-out) are represented by the mean of their history's items.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping
import logging
import time
from dataclasses import dataclass

import numpy as np

from mmsr_bench.data.splits import ITEM_TEXT_FIELDS, EvalSplit, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.loop import Resumable
from mmsr_bench.models.adapter import AdapterConfig, Needs, register
from mmsr_bench.models.search_space import Choice
from mmsr_bench.models.toolkits.feature_adapter import FeatureAdapter
from mmsr_bench.models.toolkits.features import FeatureMatrix

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ model
@dataclass(frozen=True)
class MMGCNConfig(AdapterConfig):
    batch_size: int = 2048
    embedding_size: int = 64
    latent_size: int = 256
    n_layers: int = 2
    concat: bool = False
    lr: float = 1e-3
    reg_weight: float = 1e-5
    epochs: int = 300
    patience: int = 20
    valid_metric: str = "ndcg@10"
    modalities: str = "id,text,image"
    text_encoder: str = "all-MiniLM-L6-v2"
    text_fields: tuple[str, ...] = ITEM_TEXT_FIELDS
    image_encoder: str = "efficientnet-lite0"  # real ImageNet weights; "open_clip:<config>" selects CLIP
    clip_weights: str = ""

    #: MMRec's published grid for MMGCN (enoche/MMRec, src/configs/model/MMGCN.yaml: reg_weight and learning_rate,
    #: the two it tunes; embedding 64 and 2 layers fixed, as here).
    search_space: ClassVar[Mapping[str, Any]] = {
        "lr": Choice((1e-4, 5e-4, 1e-3, 5e-3, 1e-2)),
        "reg_weight": Choice((0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)),
    }
    allow_network: bool = True
    threads: int = 0
    eval_batch_size: int = 1024


@register()
class MMGCN(FeatureAdapter):
    """Multi-modal graph convolution on the training user-item graph; BPR; inner-product scoring."""

    name = "mmgcn"
    #: the conformance kit's tiny budget (and the study's ``--budget tiny``), inherited by variants
    conformance_overrides = {"epochs": "1", "image_encoder": "open_clip:ViT-S-32", "threads": "1"}
    config_cls = MMGCNConfig
    needs = Needs(text=True, images=True)
    description = "MMGCN (Wei et al., MM 2019): per-modality GCNs on the user-item graph (id+text+image)"

    def __init__(self, config: MMGCNConfig, *, seed: int = 0, device: str = "cpu", cache_dir: str = "") -> None:
        super().__init__(config, seed=seed, device=device, cache_dir=cache_dir)
        self.net = None  # the network (mmsr_bench.models.toolkits.mmgcn_net.MMGCNNet) once fitted
        self._rep: np.ndarray | None = None

    def _fit(self, train: TrainData, valid: EvalSplit, feats: dict[str, FeatureMatrix]) -> None:
        import torch
        import torch.nn.functional as F

        from mmsr_bench.models.toolkits.mmgcn_net import MMGCNNet, mean_adjacency

        cfg: MMGCNConfig = self.config
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        users, items = train.interactions()
        if len(users) == 0:
            raise BenchError(f"{train.dataset}: no training interactions")
        n_users, n_items = train.n_users, train.n_items
        adj = mean_adjacency(n_users, n_items, users, items)
        seen = [set(s.tolist()) for s in train.sequences]
        self.net = MMGCNNet(n_users, n_items, feats, "id" in self.modalities, cfg)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        t0 = time.perf_counter()

        def train_epoch(epoch: int) -> float:
            self.net.train()
            order = rng.permutation(len(users))
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                u, pos = users[idx], items[idx]
                neg = rng.integers(1, n_items + 1, size=len(idx))
                for k in range(len(idx)):  # resample the (rare) seen negatives
                    while int(neg[k]) in seen[u[k]]:
                        neg[k] = rng.integers(1, n_items + 1)
                rep = self.net(adj)
                ut = torch.as_tensor(u)
                pt, nt = torch.as_tensor(pos), torch.as_tensor(neg)
                ue = rep[ut]
                ps = (ue * rep[n_users + pt - 1]).sum(-1)
                ns = (ue * rep[n_users + nt - 1]).sum(-1)
                loss = -F.logsigmoid(ps - ns).mean() + cfg.reg_weight * self.net.reg(ut, pt)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self._cache_rep(adj)
            return total / len(users)

        self._train_epochs(train_epoch, train, valid, Resumable.of_module(self.net, opt, {"sample": rng}), self.net,
                           f"mmgcn {train.dataset}")
        self._cache_rep(adj)
        self.run_info.update(train_seconds=round(time.perf_counter() - t0, 2))

    def _cache_rep(self, adj) -> None:
        import torch

        self.net.eval()
        with torch.no_grad():
            self._rep = self.net(adj).numpy()

    def score(self, batch: ScoreBatch) -> np.ndarray:
        if self._rep is None or self.net is None:
            raise BenchError("mmgcn: score() called before fit()")
        n_users = self.net.n_users
        item_rep = np.concatenate([np.zeros((1, self._rep.shape[1]), np.float32), self._rep[n_users:]], 0)
        u_rep = np.empty((len(batch.users), self._rep.shape[1]), np.float32)
        for k, u in enumerate(batch.users):
            if 0 <= int(u) < n_users:
                u_rep[k] = self._rep[int(u)]
            else:
                hist = np.asarray(batch.histories[k], dtype=np.int64)
                u_rep[k] = item_rep[hist].mean(0) if len(hist) else 0.0
        cands = np.asarray(batch.candidates, dtype=np.int64)
        if batch.full_ranking:
            return u_rep @ item_rep[1:].T
        return np.einsum("bd,bcd->bc", u_rep, item_rep[cands])


@dataclass(frozen=True)
class MMGCNTextConfig(MMGCNConfig):
    modalities: str = "id,text"


@register()
class MMGCNText(MMGCN):
    """``mmgcn-text``: id + text only, for datasets with item text but no images (Beauty, Toys)."""

    name = "mmgcn-text"
    config_cls = MMGCNTextConfig
    needs = Needs(text=True)
    description = "MMGCN with id + text modalities (no images)"

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
import torch
import torch.nn.functional as F
from torch import nn

from mmsr_bench.data.splits import ITEM_TEXT_FIELDS, EvalSplit, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError
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


class _Branch(nn.Module):
    """One modality's GCN (MMGCN's ``GCN`` module). ``features`` None = learned item features (ID-only)."""

    def __init__(self, n_users: int, n_items: int, features: np.ndarray | None, cfg: MMGCNConfig, has_id: bool):
        super().__init__()
        d = cfg.embedding_size
        if features is None:
            self.item_feat = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_items, d)))
            self.register_buffer("features", torch.zeros(0))
            self.mlp = None
            d_in = d
        else:
            self.item_feat = None
            self.register_buffer("features", torch.as_tensor(features, dtype=torch.float32))
            self.mlp = nn.Linear(features.shape[1], cfg.latent_size)
            d_in = cfg.latent_size
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, d_in)))
        self.has_id = has_id
        self.concat = cfg.concat
        self.conv = nn.ParameterList()
        self.lin = nn.ModuleList()
        self.g = nn.ModuleList()
        for layer in range(cfg.n_layers):
            di = d_in if layer == 0 else d
            self.conv.append(nn.Parameter(nn.init.xavier_normal_(torch.empty(di, di))))
            self.lin.append(nn.Linear(di, d))
            self.g.append(nn.Linear(di + d if cfg.concat else di, d))

    def forward(self, adj: torch.Tensor, id_emb: torch.Tensor | None) -> torch.Tensor:
        items = self.item_feat if self.item_feat is not None else self.mlp(self.features)
        x = F.normalize(torch.cat([self.preference, items], 0), dim=-1)
        for conv, lin, g in zip(self.conv, self.lin, self.g):
            h = F.leaky_relu(torch.sparse.mm(adj, x @ conv))
            x_hat = F.leaky_relu(lin(x)) + (id_emb if self.has_id and id_emb is not None else 0.0)
            x = F.leaky_relu(g(torch.cat([h, x_hat], -1))) if self.concat else F.leaky_relu(g(h) + x_hat)
        return x


class _MMGCNNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, feats: dict[str, FeatureMatrix], use_id: bool, cfg: MMGCNConfig):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.id_emb = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users + n_items, cfg.embedding_size))) \
            if use_id else None
        branches = {m: _Branch(n_users, n_items, fm.values[1:], cfg, use_id) for m, fm in feats.items()}
        if not branches:
            branches = {"id": _Branch(n_users, n_items, None, cfg, False)}
        self.branches = nn.ModuleDict(branches)

    def forward(self, adj: torch.Tensor) -> torch.Tensor:
        reps = [b(adj, self.id_emb) for b in self.branches.values()]
        return torch.stack(reps, 0).mean(0)  # (n_users + n_items, d): users first, then items 1..n

    def reg(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(())
        if self.id_emb is not None:
            out = out + self.id_emb[users].pow(2).mean() + self.id_emb[self.n_users + items - 1].pow(2).mean()
        for b in self.branches.values():
            out = out + b.preference[users].pow(2).mean()
        return out


def _mean_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """Row-normalised (mean-aggregation) adjacency of the undirected user-item graph; node u, item n_users+i-1."""
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    u, i = pairs[:, 0], n_users + pairs[:, 1] - 1
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    n = n_users + n_items
    deg = np.bincount(rows, minlength=n).astype(np.float32)
    vals = 1.0 / np.maximum(deg[rows], 1.0)
    idx = torch.as_tensor(np.stack([rows, cols]), dtype=torch.long)
    return torch.sparse_coo_tensor(idx, torch.as_tensor(vals), (n, n)).coalesce()


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
        self.net: _MMGCNNet | None = None
        self._rep: np.ndarray | None = None

    def _fit(self, train: TrainData, valid: EvalSplit, feats: dict[str, FeatureMatrix]) -> None:
        cfg: MMGCNConfig = self.config
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        users, items = train.interactions()
        if len(users) == 0:
            raise BenchError(f"{train.dataset}: no training interactions")
        n_users, n_items = train.n_users, train.n_items
        adj = _mean_adjacency(n_users, n_items, users, items)
        seen = [set(s.tolist()) for s in train.sequences]
        self.net = _MMGCNNet(n_users, n_items, feats, "id" in self.modalities, cfg)
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

        self._train_epochs(train_epoch, valid, self.net, f"mmgcn {train.dataset}")
        self._cache_rep(adj)
        self.run_info.update(train_seconds=round(time.perf_counter() - t0, 2))

    def _cache_rep(self, adj: torch.Tensor) -> None:
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

"""MMGCN's network (:mod:`mmsr_bench.models.mmgcn` describes the model): one graph-convolution branch per modality,
their mean, and the mean-aggregation adjacency. Apart from the adapter so that importing the adapter (for its
configuration, its hash or the catalog) imports no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from mmsr_bench.models.mmgcn import MMGCNConfig
    from mmsr_bench.models.toolkits.features import FeatureMatrix


class Branch(nn.Module):
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


class MMGCNNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, feats: dict[str, FeatureMatrix], use_id: bool, cfg: MMGCNConfig):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.id_emb = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users + n_items, cfg.embedding_size))) \
            if use_id else None
        branches = {m: Branch(n_users, n_items, fm.values[1:], cfg, use_id) for m, fm in feats.items()}
        if not branches:
            branches = {"id": Branch(n_users, n_items, None, cfg, False)}
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


def mean_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
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

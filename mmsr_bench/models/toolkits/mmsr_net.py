"""MMSR's network (:mod:`mmsr_bench.models.mmsr` describes the model): the dual-attention layer over each user's
modality graph and the sequence encoder with its update gate. Apart from the adapter so that importing the adapter
(for its configuration, its hash or the catalog) imports no torch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from mmsr_bench.models.mmsr import MMSRConfig

# relation ids in the per-sequence adjacency: adj[b, i, j] = r means node i attends to node j with relation r
R_NONE, R_SELF, R_PREV, R_NEXT, R_SHARED, R_ITEM2MOD, R_MOD2ITEM, R_MOD2MOD = range(8)
HOMO = (R_SELF, R_PREV, R_NEXT, R_SHARED)
HETE = (R_SELF, R_ITEM2MOD, R_MOD2ITEM, R_MOD2MOD)
_NEG = -1e9


class DualAttentionLayer(nn.Module):
    """Homogeneous (relation-aware content) and heterogeneous (type-aware QKV) attention plus the update gate."""

    def __init__(self, dim: int, n_types: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.a = nn.Parameter(torch.empty(len(HOMO), dim))
        self.wq = nn.Parameter(torch.empty(n_types, dim, dim))
        self.wk = nn.Parameter(torch.empty(n_types, dim, dim))
        self.wv = nn.Parameter(torch.empty(n_types, dim, dim))
        self.gate = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        for p in (self.a,):
            nn.init.normal_(p, std=1.0 / math.sqrt(dim))
        for p in (self.wq, self.wk, self.wv):
            nn.init.xavier_uniform_(p.view(-1, dim))

    def _typed(self, h: torch.Tensor, spans: list[tuple[int, int, int]], w: torch.Tensor) -> torch.Tensor:
        # per-node-type projection; node types occupy fixed contiguous slot ranges (type, start, end)
        return torch.cat([h[:, a:b] @ w[t] for t, a, b in spans], 1)

    def homo(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        logits = torch.full(adj.shape, _NEG, dtype=h.dtype, device=h.device)
        for idx, r in enumerate(HOMO):
            e = F.leaky_relu(torch.matmul(h * self.a[idx], h.transpose(1, 2)), 0.2)
            logits = torch.where(adj == r, e, logits)
        return torch.matmul(self.drop(torch.softmax(logits, -1)), h)

    def hete(self, h: torch.Tensor, adj: torch.Tensor, spans: list[tuple[int, int, int]]) -> torch.Tensor:
        q, k, v = (self._typed(h, spans, w) for w in (self.wq, self.wk, self.wv))
        s = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(self.dim)
        mask = torch.zeros_like(adj, dtype=torch.bool)
        for r in HETE:
            mask |= adj == r
        s = s.masked_fill(~mask, _NEG)
        return torch.matmul(self.drop(torch.softmax(s, -1)), v)

    def forward(self, h: torch.Tensor, adj: torch.Tensor, spans: list[tuple[int, int, int]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        late = self.hete(self.homo(h, adj), adj, spans)  # sequence first, then cross-modal
        early = self.homo(self.hete(h, adj, spans), adj)  # cross-modal first, then sequence
        both = torch.stack([late, early], -2)  # (B, N, 2, D)
        w = torch.softmax(self.gate(both).squeeze(-1), -1)  # (B, N, 2)
        out = (both * w.unsqueeze(-1)).sum(-2)
        return self.norm(h + self.drop(out)), w


class MMSRNet(nn.Module):
    def __init__(self, n_items: int, codes: dict[str, np.ndarray], code_init: dict[str, np.ndarray],
                 cfg: MMSRConfig) -> None:
        super().__init__()
        d, self.L = cfg.embedding_size, cfg.max_len
        self.mods = list(codes)
        self.k = {m: codes[m].shape[1] for m in self.mods}
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=1.0 / math.sqrt(d))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.code_emb = nn.ModuleDict()
        for m in self.mods:
            emb = nn.Embedding(code_init[m].shape[0], d, padding_idx=0)
            with torch.no_grad():
                emb.weight.copy_(torch.as_tensor(code_init[m]))
            self.code_emb[m] = emb
            self.register_buffer(f"codes_{m}", torch.as_tensor(codes[m]))
        self.pos_emb = nn.Embedding(self.L, d)
        self.type_emb = nn.Embedding(1 + len(self.mods), d)  # 0 item, 1.. modality
        for emb in (self.pos_emb, self.type_emb):  # same scale as the item/code embeddings (the authors' init)
            nn.init.normal_(emb.weight, std=1.0 / math.sqrt(d))
        self.inp = nn.Linear(3 * d, d)
        self.layers = nn.ModuleList([DualAttentionLayer(d, 1 + len(self.mods), cfg.dropout)
                                     for _ in range(cfg.n_layers)])
        self.w1 = nn.Linear(2 * d, d, bias=False)
        self.glu1 = nn.Linear(d, d)
        self.glu2 = nn.Linear(d, d, bias=False)
        self.w2 = nn.Linear(d, 1, bias=False)
        self.fusion = nn.Linear(d * (1 + len(self.mods)), d)
        self.drop = nn.Dropout(cfg.dropout)
        self._structures: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]] = {}

    def codes(self, m: str) -> torch.Tensor:
        return getattr(self, f"codes_{m}")

    def structure(self, L: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
        """Relation ids, node types, node positions (counted so the last item is at ``max_len - 1``) and
        per-type slot spans for sequences of ``L`` slots; cached per length (batches are cut to their longest)."""
        key = L
        if key not in self._structures:
            adj, types, pos = self._build_structure(L)
            spans, start = [(0, 0, L)], L
            for mi, m in enumerate(self.mods):
                spans.append((mi + 1, start, start + L * self.k[m]))
                start += L * self.k[m]
            self._structures[key] = (adj, types, pos + (self.L - L), spans)
        adj, types, pos, spans = self._structures[key]
        return adj.to(device), types.to(device), pos.to(device), spans

    def _build_structure(self, L: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slots = [(0, t, -1) for t in range(L)]  # (type, position, code slot)
        for mi, m in enumerate(self.mods):
            slots += [(mi + 1, t, j) for t in range(L) for j in range(self.k[m])]
        n = len(slots)
        adj = torch.zeros(n, n, dtype=torch.long)
        types = torch.tensor([s[0] for s in slots])
        pos = torch.tensor([s[1] for s in slots])
        for i, (ti, pi, ji) in enumerate(slots):
            for j, (tj, pj, jj) in enumerate(slots):
                if i == j:
                    adj[i, j] = R_SELF
                elif ti == tj and ji == jj and pj == pi - 1:
                    adj[i, j] = R_PREV
                elif ti == tj and ji == jj and pj == pi + 1:
                    adj[i, j] = R_NEXT
                elif pi == pj and ti == 0 and tj > 0:
                    adj[i, j] = R_ITEM2MOD
                elif pi == pj and ti > 0 and tj == 0:
                    adj[i, j] = R_MOD2ITEM
                elif pi == pj and ti > 0 and tj > 0 and ti != tj:
                    adj[i, j] = R_MOD2MOD
        return adj, types, pos

    def graph(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list]:
        """Node ids, node types, node positions, relation matrix and validity for left-padded ``seqs`` (B, L)."""
        B, L = seqs.shape
        base_adj, types, pos, spans = self.structure(L, seqs.device)
        node_vals = [seqs]
        valid = [seqs > 0]
        code_ids = []
        for m in self.mods:
            c = self.codes(m)[seqs]  # (B, L, k)
            c = c.reshape(B, -1)
            code_ids.append(c)
            node_vals.append(c)
            valid.append(c > 0)
        valid_t = torch.cat(valid, 1)  # (B, N)
        adj = base_adj.unsqueeze(0).expand(B, -1, -1).clone()
        pair_ok = valid_t.unsqueeze(2) & valid_t.unsqueeze(1)
        adj = torch.where(pair_ok, adj, torch.zeros_like(adj))
        # shared codes between different positions of the same modality (the paper's merged code nodes)
        offset = L
        for m, c in zip(self.mods, code_ids):
            n = c.shape[1]
            same = (c.unsqueeze(2) == c.unsqueeze(1)) & (c.unsqueeze(2) > 0)
            block = adj[:, offset:offset + n, offset:offset + n]
            adj[:, offset:offset + n, offset:offset + n] = torch.where(same & (block == R_NONE),
                                                                       torch.full_like(block, R_SHARED), block)
            offset += n
        eye = torch.eye(adj.shape[1], dtype=torch.bool, device=adj.device).unsqueeze(0)
        adj = torch.where(eye, torch.full_like(adj, R_SELF), adj)  # every node (padding too) keeps a self loop
        return node_vals, types, pos, adj, valid_t, spans

    def forward(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence representation (B, D) and the mean update-gate weights (late, early) for diagnostics."""
        seqs = seqs[:, -max(1, int((seqs > 0).sum(1).max())):]  # cut left padding shared by the whole batch
        node_vals, types, pos, adj, valid, spans = self.graph(seqs)
        B = seqs.shape[0]
        h = [self.item_emb(node_vals[0])] + [self.code_emb[m](v) for m, v in zip(self.mods, node_vals[1:])]
        h = torch.cat(h, 1)
        types_b = types.unsqueeze(0).expand(B, -1)
        h = self.inp(torch.cat([h, self.type_emb(types_b), self.pos_emb(pos).unsqueeze(0).expand(B, -1, -1)], -1))
        h = self.drop(h) * valid.unsqueeze(-1)
        gates = []
        for layer in self.layers:
            h, w = layer(h, adj, spans)
            h = h * valid.unsqueeze(-1)
            gates.append((w * valid.unsqueeze(-1)).sum((0, 1)) / valid.sum().clamp(min=1))
        L = seqs.shape[1]
        item_h, item_mask = h[:, :L], valid[:, :L].float().unsqueeze(-1)
        mean = (item_h * item_mask).sum(1) / item_mask.sum(1).clamp(min=1.0)
        nh = torch.tanh(self.w1(torch.cat([self.pos_emb(pos[:L]).unsqueeze(0).expand(B, -1, -1), item_h], -1)))
        nh = torch.sigmoid(self.glu1(nh) + self.glu2(mean).unsqueeze(1))
        beta = self.w2(nh) * item_mask
        parts = [(beta * item_h).sum(1)]
        offset = L
        for m in self.mods:
            n = L * self.k[m]
            mh, mm = h[:, offset:offset + n], valid[:, offset:offset + n].float().unsqueeze(-1)
            parts.append((mh * mm).sum(1) / mm.sum(1).clamp(min=1.0))
            offset += n
        return self.fusion(torch.cat(parts, -1)), torch.stack(gates).mean(0)

    def item_table(self) -> torch.Tensor:
        """Candidate-side embeddings (n_items + 1, D): fusion of the ID embedding and the item's code embeddings."""
        parts = [self.item_emb.weight]
        for m in self.mods:
            parts.append(self.code_emb[m](self.codes(m)).sum(1))
        return self.fusion(torch.cat(parts, -1))

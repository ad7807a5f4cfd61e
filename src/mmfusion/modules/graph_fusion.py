"""Decoupled Graph Fusion (docs/design/mea.md §4): attention over a small fully connected graph of modality codes.

For nodes h_i (one per modality) and neighbours j != i: δ_ij = q([W h_i ; W h_j]), ξ_ij = softmax_j(GELU(δ_ij)),
h_fin = Σ_i σ(Σ_j ξ_ij · W h_j). MEA uses two such graphs with separate weights (exclusive and agnostic).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GraphFusion(nn.Module):
    """nodes (B, M, d) -> (fused (B, d), ξ (B, M, M) with ξ_ii = 0 and rows summing to 1 over neighbours)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W = nn.Linear(dim, dim, bias=False)
        self.q = nn.Linear(2 * dim, 1)

    def forward(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        B, M, d = nodes.shape
        wh = self.W(nodes)  # (B, M, d)
        pairs = torch.cat([wh[:, :, None].expand(B, M, M, d), wh[:, None, :].expand(B, M, M, d)], -1)  # (B, M, M, 2d)
        delta = F.gelu(self.q(pairs).squeeze(-1))  # (B, M, M): δ_ij
        self_loop = torch.eye(M, dtype=torch.bool, device=nodes.device)
        xi = delta.masked_fill(self_loop, float("-inf")).softmax(-1)  # over neighbours j != i
        fused = torch.sigmoid(xi @ wh).sum(1)  # Σ_i σ(Σ_j ξ_ij W h_j) -> (B, d)
        return fused, xi


class DecoupledGraphFusion(nn.Module):
    """One graph per branch, separate weights: {"exclusive": (B, M, d), "agnostic": (B, M, d)} -> (B, branches·d).

    ``kind`` replaces the graphs for the paper's ablations: "concat" (B, M·d per branch), "add" or "multiply" over
    the M nodes.
    """

    def __init__(self, dim: int, branches: Sequence[str] = ("exclusive", "agnostic"),
                 kind: Literal["graph", "concat", "add", "multiply"] = "graph") -> None:
        super().__init__()
        self.branches, self.kind = list(branches), kind
        self.graphs = nn.ModuleDict({b: GraphFusion(dim) for b in self.branches}) if kind == "graph" else None

    def out_dim(self, dim: int, num_modalities: int) -> int:
        return len(self.branches) * dim * (num_modalities if self.kind == "concat" else 1)

    def forward(self, codes: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        fused, xi = [], {}
        for b in self.branches:
            nodes = codes[b]  # (B, M, d)
            if self.graphs is not None:
                f, xi[b] = self.graphs[b](nodes)
            elif self.kind == "concat":
                f = nodes.flatten(1)
            elif self.kind == "add":
                f = nodes.sum(1)
            else:
                f = nodes.prod(1)
            fused.append(f)
        return torch.cat(fused, -1), xi

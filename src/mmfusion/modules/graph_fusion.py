"""Decoupled Graph Fusion (MEA, Sec. III-D of the paper): attention over a small fully connected graph of modality
codes.

For nodes h_i (one per modality) and neighbours j != i: δ_ij = q([W h_i ; W h_j]), ξ_ij = softmax_j(GELU(δ_ij)),
h_fin = Σ_i σ(Σ_j ξ_ij · W h_j). MEA uses two such graphs with separate weights (exclusive and agnostic).
A modality missing from a clip (no real frame) is no node of that clip's graph: it is neither a neighbour j nor a
term i of the sum, so the clip is fused exactly as a graph of its present modalities would fuse it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.modules.attention import MASKED_LOGIT


class GraphFusion(nn.Module):
    """nodes (B, M, d), present (B, M) bool or None (all present) -> (fused (B, d), ξ (B, M, M)): ξ_ii = 0, ξ_ij = 0
    for a missing j, and each row sums to 1 over its present neighbours (0 where it has none)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W = nn.Linear(dim, dim, bias=False)
        self.q = nn.Linear(2 * dim, 1)

    def forward(self, nodes: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, M, d = nodes.shape
        wh = self.W(nodes)  # (B, M, d)
        pairs = torch.cat([wh[:, :, None].expand(B, M, M, d), wh[:, None, :].expand(B, M, M, d)], -1)  # (B, M, M, 2d)
        delta = F.gelu(self.q(pairs).squeeze(-1))  # (B, M, M): δ_ij
        neighbour = ~torch.eye(M, dtype=torch.bool, device=nodes.device)  # (M, M): j != i
        if present is not None:
            neighbour = neighbour & present[:, None, :]  # (B, M, M): and j present
        xi = delta.masked_fill(~neighbour, MASKED_LOGIT).softmax(-1) * neighbour  # over present neighbours j != i
        terms = torch.sigmoid(xi @ wh)  # (B, M, d): σ(Σ_j ξ_ij W h_j)
        if present is not None:
            terms = terms * present[..., None].to(terms.dtype)
        return terms.sum(1), xi  # Σ_i over present nodes -> (B, d)


class DecoupledGraphFusion(nn.Module):
    """One graph per branch, separate weights: {"exclusive": (B, M, d), "agnostic": (B, M, d)} -> (B, branches·d).

    ``kind`` replaces the graphs for the paper's ablations: "concat" (B, M·d per branch), "add" or "multiply" over
    the M nodes. ``present`` (B, M) bool leaves missing modalities out: no node of the graph, zeros in the
    concatenation, no term of the sum or product.
    """

    def __init__(self, dim: int, branches: Sequence[str] = ("exclusive", "agnostic"),
                 kind: Literal["graph", "concat", "add", "multiply"] = "graph") -> None:
        super().__init__()
        self.branches, self.kind = list(branches), kind
        self.graphs = nn.ModuleDict({b: GraphFusion(dim) for b in self.branches}) if kind == "graph" else None

    def out_dim(self, dim: int, num_modalities: int) -> int:
        return len(self.branches) * dim * (num_modalities if self.kind == "concat" else 1)

    def forward(self, codes: Mapping[str, Tensor], present: Tensor | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        fused, xi = [], {}
        keep = None if present is None else present[..., None]  # (B, M, 1)
        for b in self.branches:
            nodes = codes[b]  # (B, M, d)
            if self.graphs is not None:
                f, xi[b] = self.graphs[b](nodes, present)
            elif self.kind == "concat":
                f = (nodes if keep is None else nodes * keep.to(nodes.dtype)).flatten(1)
            elif self.kind == "add":
                f = (nodes if keep is None else nodes * keep.to(nodes.dtype)).sum(1)
            else:
                f = (nodes if keep is None else torch.where(keep, nodes, 1.0)).prod(1)
            fused.append(f)
        return torch.cat(fused, -1), xi

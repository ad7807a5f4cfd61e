"""Weighted Attention Layer (MEA, Sec. III-B of the paper): one softmax weight per modality and sample,
ψ_m = softmax_m(γ_m), γ_m = pᵀ tanh(W · pool(Z_m) + b), pool = masked mean over time, W: D -> d_h. A modality with
no real frame in a clip gets ψ_m = 0 there; the softmax runs over the present ones.

(The paper scores a flattened (T·D)x(T·D) matrix, infeasible for long streams and undefined for variable lengths;
the pooled additive scorer is our documented deviation, docs/design/mea.md.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmfusion.modules.attention import MASKED_LOGIT
from mmfusion.modules.masking import masked_mean


class WeightedAttentionLayer(nn.Module):
    """{m: (B, T_m, D)}, masks -> ({m: ψ_m · Z_m}, ψ (B, M) in the order of ``modalities``; rows sum to 1)."""

    def __init__(self, modalities: Sequence[str], dim: int, hidden: int) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.proj = nn.Linear(dim, hidden)
        self.p = nn.Linear(hidden, 1, bias=False)

    def forward(self, z: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        pooled = torch.stack([masked_mean(z[m], masks[m]) for m in self.modalities], 1)  # (B, M, D)
        gamma = self.p(torch.tanh(self.proj(pooled))).squeeze(-1)  # (B, M)
        present = torch.stack([masks[m].any(1) for m in self.modalities], 1)  # (B, M)
        psi = gamma.masked_fill(~present, MASKED_LOGIT).softmax(-1)  # (a clip with nothing present: uniform)
        return {m: z[m] * psi[:, i, None, None] for i, m in enumerate(self.modalities)}, psi

"""Sequence-to-vector pooling that respects the padding mask: masked mean, last real frame, attention pooling."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from mmfusion.modules.masking import masked_last, masked_mean

PoolingKind = Literal["mean", "last", "attention"]


class AttentionPooling(nn.Module):
    """Softmax-weighted sum over real frames with a learned scorer: (B, T, D), (B, T) -> (B, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        s = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))  # (B, T)
        w = torch.softmax(s, -1).nan_to_num(0.0)  # a row with no real frame gets zero weights
        return (w.unsqueeze(-1) * x).sum(1)


class MaskedPooling(nn.Module):
    """Pool (B, T, D) with mask (B, T) to (B, D) by ``kind``: mean (default), last real frame, or attention."""

    def __init__(self, dim: int, kind: PoolingKind = "mean") -> None:
        super().__init__()
        self.kind = kind
        self.attn = AttentionPooling(dim) if kind == "attention" else None

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.kind == "mean":
            return masked_mean(x, mask)
        if self.kind == "last":
            return masked_last(x, mask)
        assert self.attn is not None
        return self.attn(x, mask)

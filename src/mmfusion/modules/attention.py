"""Masked multi-head attention: one eager function that can return maps, and SDPA when maps are not needed.

Both paths share the mask semantics (True = real key frame) and both give exact zeros for a query row with no
real key (a missing modality), where eager softmax would give NaN.

Shape legend: B batch, H heads, T queries, S keys, D_h head width, D model width.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def masked_softmax(logits: Tensor, key_mask: Tensor | None) -> Tensor:
    """Softmax over the last axis ignoring masked keys; all-masked rows give zeros.

    logits (B, H, T, S); key_mask (B, S) bool.
    """
    if key_mask is None:
        return logits.softmax(-1)
    keep = key_mask[:, None, None, :]  # (B, 1, 1, S)
    attn = logits.masked_fill(~keep, float("-inf")).softmax(-1)
    return attn.masked_fill(~keep.any(-1, keepdim=True), 0.0)  # zero the rows that had no key at all


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None, *, dropout: float = 0.0,
              need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention. q (B, H, T, D_h), k/v (B, H, S, D_h), key_mask (B, S) -> (B, H, T, D_h).

    With ``need_weights`` the eager path runs and returns the map (B, H, T, S); otherwise SDPA runs.
    """
    if need_weights:
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, S)
        attn = masked_softmax(logits, key_mask)
        out = F.dropout(attn, dropout, training=dropout > 0) @ v
        return out, attn
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout), None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=dropout)
    # rows with no real key: SDPA's result there is backend-dependent; make it exactly zero
    return out * key_mask.any(-1)[:, None, None, None].to(out.dtype), None


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, D_h) -> (B, T, H·D_h)."""
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)


class MultiHeadAttention(nn.Module):
    """Multi-head (cross-)attention with key-padding masks. Queries (B, T, D), keys/values (B, S, D)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, source: Tensor, source_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, T, D_h)
        k = split_heads(self.k_proj(source), self.num_heads)  # (B, H, S, D_h)
        v = split_heads(self.v_proj(source), self.num_heads)
        out, attn = attention(q, k, v, source_mask, dropout=self.dropout if self.training else 0.0,
                              need_weights=need_weights)
        return self.out_proj(merge_heads(out)), attn


class FeedForward(nn.Sequential):
    """Position-wise FFN: Linear(D, 4D) -> GELU -> Linear(4D, D), dropout on its (B, T, D) output.

    (No dropout on the 4D-wide hidden layer: on a CPU, drawing its random mask costs more than the FFN itself.)
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim), nn.Dropout(dropout))

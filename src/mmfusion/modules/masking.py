"""Mask helpers shared by every block. Masks are bool (B, T) with True = real frame (SDPA's polarity).

Nothing here assumes where the padding sits: positions, pooling and packing read the mask, so left- and
right-padded inputs give the same results.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over real frames: x (B, T, D), mask (B, T) -> (B, D). A row with no real frame gives zeros."""
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def masked_last(x: Tensor, mask: Tensor) -> Tensor:
    """The last real frame of each row: x (B, T, D) -> (B, D); zeros for a row with no real frame."""
    T = mask.shape[1]
    idx = torch.where(mask, torch.arange(T, device=mask.device), -1).amax(1)  # (B,)
    out = x.gather(1, idx.clamp_min(0)[:, None, None].expand(-1, 1, x.shape[-1]))[:, 0]
    return out * (idx >= 0).to(x.dtype)[:, None]


def positions_from_mask(mask: Tensor) -> Tensor:
    """Index of each real frame among the real frames (B, T) long; padding gets 0."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0) * mask.long()


def concat_time(xs: Sequence[Tensor], masks: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Concatenate sequences (B, T_i, D) along time together with their masks -> (B, sum T_i, D), (B, sum T_i)."""
    return torch.cat(list(xs), dim=1), torch.cat(list(masks), dim=1)


def take_time(x: Tensor, index: Tensor) -> Tensor:
    """x (B, T, D) reordered along time by index (B, T'): out[b, t] = x[b, index[b, t]]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def compact(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Move each row's real frames to the front, keeping their order.

    Returns (x_compact (B, T, D), lengths (B,), order (B, T)); :func:`uncompact` puts results back.
    """
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real frames first
    return take_time(x, order), mask.sum(1), order


def uncompact(y: Tensor, order: Tensor, mask: Tensor) -> Tensor:
    """Inverse of :func:`compact` for y (B, T, D') computed on compacted rows; padding positions get 0."""
    T = order.shape[1]
    if y.shape[1] < T:  # pad_packed_sequence returns only the longest length
        y = torch.nn.functional.pad(y, (0, 0, 0, T - y.shape[1]))
    out = torch.zeros_like(y).scatter(1, order.unsqueeze(-1).expand(-1, -1, y.shape[-1]), y)
    return torch.where(mask.unsqueeze(-1), out, 0.0)  # not a product: a non-finite value at padding stays out

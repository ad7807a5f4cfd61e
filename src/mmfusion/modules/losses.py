"""Disparity losses between exclusive and agnostic codes (MEA spec §4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hsic(x: Tensor, y: Tensor, normalize: bool = False) -> Tensor:
    """Linear-kernel HSIC over the batch: (n-1)^-2 · Tr(K_X U K_Y U), K = H Hᵀ, U = I - (1/n) 1 1ᵀ.

    x (n, d_x), y (n, d_y) -> scalar. ``normalize`` L2-normalises the rows first. For linear kernels this equals
    ``‖X̃ᵀ Ỹ‖²_F / (n-1)²`` with centred X̃, Ỹ, which is how it is computed (O(n·d²) instead of O(n²·d)).
    """
    n = x.shape[0]
    if n < 2:
        return x.new_zeros(())
    if normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    xc, yc = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    return (xc.transpose(0, 1) @ yc).square().sum() / (n - 1) ** 2


def hsic_trace(x: Tensor, y: Tensor) -> Tensor:
    """The trace formula written out, for checking :func:`hsic`."""
    n = x.shape[0]
    U = torch.eye(n, dtype=x.dtype) - torch.full((n, n), 1.0 / n, dtype=x.dtype)
    return torch.trace(x @ x.T @ U @ y @ y.T @ U) / (n - 1) ** 2


def orthogonality(x: Tensor, y: Tensor) -> Tensor:
    """DSN's soft orthogonality ‖Xᵀ Y‖²_F on the batch (the ablation alternative to HSIC)."""
    return (x.transpose(0, 1) @ y).square().sum()

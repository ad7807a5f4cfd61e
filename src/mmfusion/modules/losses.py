"""Disparity losses between exclusive and agnostic codes (MEA's L_dis and its ablation alternative, MISA's
difference and similarity losses)."""

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
    """DSN's difference loss ‖X̂ᵀ Ŷ‖²_F, normalised as DSN's implementation does: rows centred over the batch and
    L2-normalised per sample, then averaged over the d_x·d_y entries (the ablation alternative to HSIC).

    x (n, d_x), y (n, d_y) -> scalar. Unnormalised, ‖Xᵀ Y‖²_F grows with the batch size, the code width and the
    fourth power of the codes' scale, and on MEA's codes at initialisation it is ~10⁵-10⁶ times HSIC (the codes
    share a large mean), so swapping it in for HSIC under the same α would change the loss weight, not only its
    form. Normalised it is scale-free and starts 7-17 times HSIC on those codes (benchmark shapes, batch 32).
    """
    if x.shape[0] < 2:  # one code has no batch-centred part (as for HSIC)
        return x.new_zeros(())
    return soft_orthogonality(x, y)


def soft_orthogonality(x: Tensor, y: Tensor) -> Tensor:
    """MISA's (and DSN's) difference loss: mean of (X̂ᵀ Ŷ)² with rows centred and L2-normalised.

    x (n, d_x), y (n, d_y) -> scalar."""
    x = F.normalize(x - x.mean(0, keepdim=True), dim=1)
    y = F.normalize(y - y.mean(0, keepdim=True), dim=1)
    return (x.transpose(0, 1) @ y).square().mean()


def cmd(x: Tensor, y: Tensor, moments: int = 5) -> Tensor:
    """Central moment discrepancy (Zellinger et al.) between the rows of x (n, d) and y (n, d), MISA's similarity."""
    mx, my = x.mean(0), y.mean(0)
    cx, cy = x - mx, y - my
    total = (mx - my).norm()
    for k in range(2, moments + 1):
        total = total + (cx.pow(k).mean(0) - cy.pow(k).mean(0)).norm()
    return total

"""Dropout whose random mask is cheap to draw on a CPU.

PyTorch's CPU dropout draws one Bernoulli variate per element (~7 ns each on a 2-core machine): at MEA's sizes
(32 × 500 × 40 activations, ~70 dropout sites per step) that is ~5 % of a training step. Here one 64-bit draw of
the same generator gives four 15-bit uniform integers; an element is kept when its integer is at least
round(p·2¹⁵), and kept elements are scaled by 1 / (1 - p'), where p' = round(p·2¹⁵) / 2¹⁵ is the drop rate
actually used (|p' - p| <= 2⁻¹⁶, so p = 0.1 drops 10.0006 % of elements; the expectation is preserved exactly).
Masks come from torch's default generator, so ``torch.manual_seed`` / Lightning's seeding make them reproducible.
Anywhere else (a GPU, a non-float tensor) it is :func:`torch.nn.functional.dropout`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 15


def _keep_scale(x: Tensor, p: float) -> Tensor:
    """(x.shape) float mask: 0 for dropped elements, 1 / (1 - p') for kept ones."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()  # 63 random bits each
    uniform = words.view(torch.int16)[:n].bitwise_and_(_LEVELS - 1)  # 4 uniform 15-bit integers per word
    threshold = round(p * _LEVELS)
    return (uniform >= threshold).view(x.shape).to(x.dtype).mul_(_LEVELS / (_LEVELS - threshold))


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, p: float) -> Tensor:
        mask = _keep_scale(x, p)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout of x (any shape) with drop rate p; the identity when not training or p = 0."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point() or p >= 1.0:
        return F.dropout(x, p, training=True)
    return _MaskedScale.apply(x, p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the cheap CPU mask of :func:`dropout` (same arguments, no parameters or buffers)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)

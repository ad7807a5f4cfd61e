"""Gradient reversal and MEA's double discriminator (docs/design/mea.md §4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.coeff * grad, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-coeff`` backward (Ganin & Lempitsky)."""
    return _GradReverse.apply(x, coeff)


class ModalityDiscriminator(nn.Sequential):
    """D_m: MLP d_h -> d_h -> M classifying which modality a code came from (labels L=0, V=1, A=2)."""

    def __init__(self, dim: int, num_modalities: int = 3) -> None:
        super().__init__(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_modalities))


class ImportanceDiscriminator(nn.Linear):
    """D_i: linear d_h -> M on detached agnostic codes; 1 - its probability of the true modality is ω."""

    def __init__(self, dim: int, num_modalities: int = 3) -> None:
        super().__init__(dim, num_modalities)

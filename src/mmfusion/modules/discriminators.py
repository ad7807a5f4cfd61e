"""Gradient reversal and MEA's double discriminator (docs/design/mea.md §4)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
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


def refit_discriminator(disc: nn.Module, optimizer: torch.optim.Optimizer, inputs: Tensor, labels: Tensor,
                        steps: int, weight: Tensor | None = None) -> None:
    """``steps`` updates of ``disc`` alone (through ``optimizer``, which holds only its parameters) on the detached
    ``inputs`` (N, d) with class ``labels`` (N,), each row weighted by ``weight`` (N,) (None: all 1).

    Gradient reversal makes the encoder minimise the divergence between the classes' codes only against a
    discriminator near its optimum (Ganin & Lempitsky; Goodfellow et al.'s k discriminator steps per generator
    step). With one joint update a discriminator that lags behind is fooled by moving each class's codes where it
    predicts another class, and the classes stay apart (docs/results/mea_small_data.md).

    Where several processes train together (torch.distributed initialised), each update averages the gradients
    over the processes, so every replica of ``disc`` takes the same steps, as the joint step under DDP does.
    Gradients come from :func:`torch.autograd.grad`, not ``backward``, so no gradient-accumulation hook (DDP's) runs.
    """
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    x = inputs.detach()
    w = torch.ones(len(x), dtype=x.dtype, device=x.device) if weight is None else weight.detach().to(x.dtype)
    count = w.sum().clamp_min(1.0)
    params = list(disc.parameters())
    saved = [p.grad for p in params]  # gradients the model's own optimiser may be accumulating stay as they were
    with torch.enable_grad():
        for _ in range(steps):
            loss = (F.cross_entropy(disc(x), labels, reduction="none") * w).sum() / count
            grads = torch.autograd.grad(loss, params)  # reaches only disc's parameters: the inputs are detached
            for p, g in zip(params, grads):
                if world > 1:
                    dist.all_reduce(g)
                    g /= world
                p.grad = g
            optimizer.step()
    for p, g in zip(params, saved):
        p.grad = g

"""Per-modality standardisation of codes that one shared encoder produced for every modality.

A shared encoder maps each modality's sequence summary to a code; whatever per-modality offset (or scale) its inputs
carry survives into the codes, and a modality discriminator reads the modality off it. :class:`ModalityStandardizer`
takes those first two moments away: each modality's codes are centred and scaled per dimension with statistics over
the batch's clips that have the modality (running estimates in evaluation), as batch normalisation without an affine
map, kept per modality. Used by MEA's ``agnostic_norm="modality"`` (docs/design/mea.md §4).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ModalityStandardizer(nn.Module):
    """(B, M, D) codes, (B, M) bool present -> (B, M, D): each modality standardised per dimension.

    Training: mean and (biased) variance over the present clips of the batch; a modality present in fewer than two
    clips uses the running estimates instead. Evaluation: the running estimates (momentum ``momentum``, unbiased
    variance, as :class:`torch.nn.BatchNorm1d`). Rows of absent (clip, modality) pairs come out as zeros and never
    enter a statistic.
    """

    def __init__(self, num_modalities: int, dim: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(num_modalities, dim))
        self.register_buffer("running_var", torch.ones(num_modalities, dim))

    def forward(self, x: Tensor, present: Tensor) -> Tensor:
        keep = present.to(x.dtype)[..., None]  # (B, M, 1)
        mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        if self.training:
            n = keep.sum(0)  # (M, 1)
            batch_mean = (x * keep).sum(0) / n.clamp_min(1.0)
            batch_var = ((x - batch_mean).square() * keep).sum(0) / n.clamp_min(1.0)
            enough = n >= 2  # (M, 1)
            with torch.no_grad():
                unbiased = batch_var * n / (n - 1).clamp_min(1.0)
                m = self.momentum
                self.running_mean.copy_(torch.where(enough, (1 - m) * self.running_mean + m * batch_mean,
                                                    self.running_mean))
                self.running_var.copy_(torch.where(enough, (1 - m) * self.running_var + m * unbiased,
                                                   self.running_var))
            mean = torch.where(enough, batch_mean, mean)
            var = torch.where(enough, batch_var, var)
        return (x - mean) * torch.rsqrt(var + self.eps) * keep

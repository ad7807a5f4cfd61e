"""Per-modality standardisation of codes that one shared encoder produced for every modality.

A shared encoder maps each modality's sequence summary to a code; whatever per-modality offset (or scale) its inputs
carry survives into the codes, and a modality discriminator reads the modality off it. :class:`ModalityStandardizer`
takes those first two moments away: each modality's codes are centred and scaled per dimension with statistics over
the batch's clips that have the modality (running estimates in evaluation), as batch normalisation without an affine
map, kept per modality. Used by MEA's ``agnostic_norm="modality"`` (docs/design/mea.md §4).

Running estimates gathered in training mode describe codes computed *with* dropout; the codes of an evaluation-mode
network differ from them, by an offset per modality that a classifier can read again. :meth:`estimate` therefore
replaces the running values with the exact statistics of evaluation-mode codes, which the training loop collects on
training batches before each validation (``calibrate`` of the model).
"""

from __future__ import annotations

from collections.abc import Callable

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

    @torch.no_grad()
    def estimate(self, run: Callable[[], None]) -> None:
        """Set the running values to the exact mean and unbiased variance of every (code, present) pair that reaches
        this module in evaluation mode while ``run()`` executes (a modality seen fewer than twice keeps its own)."""
        seen: list[tuple[Tensor, Tensor]] = []
        handle = self.register_forward_hook(lambda mod, args, out: seen.append((args[0].detach(), args[1])))
        try:
            run()
        finally:
            handle.remove()
        if not seen:
            return
        x = torch.cat([c for c, _ in seen]).to(self.running_mean.dtype)
        keep = torch.cat([p for _, p in seen]).to(x.dtype)[..., None]
        n = keep.sum(0)
        mean = (x * keep).sum(0) / n.clamp_min(1.0)
        var = ((x - mean).square() * keep).sum(0) / (n - 1).clamp_min(1.0)
        enough = n >= 2
        self.running_mean.copy_(torch.where(enough, mean, self.running_mean))
        self.running_var.copy_(torch.where(enough, var, self.running_var))

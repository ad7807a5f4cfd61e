"""Multimodal Split Attention Fusion (Su et al., arXiv 2012.07175, Sec. 3), as docs/design/msaf.md §1 reads it.

MSAF is channel-first by design: modality m is a tensor X_m (B, C_m, *S_m) — channels on dim 1, any trailing dims
(3-D video maps, 1-D audio maps, RNN time steps, or none for a vector). Each modality is re-weighted in place and
keeps its shape. One block-attention step:

1. split X_m into n_m = ceil(C_m / C) channel blocks (the last zero-padded on the channel axis, cropped after);
2. block dropout in training: each whole block of each sample is dropped with probability p, survivors scaled by
   1/(1-p), once (``reference_compat=True`` applies the mask a second time, as the authors' code does);
3. squeeze: sum a modality's blocks, average over its trailing positions (real time steps only, given masks);
4. join: s = Σ_m s_m, z = ReLU(BN(Linear_{C->C'}(s))), C' = C // r;
5. excite: one Linear_{C'->C} per block, softmax over all N blocks per channel and sample;
6. floor: α = γ + (1 - γ)·α;  7. apply α to each block.

With q > 1 time segments, every segment gets its own step (own weights). Segments follow each sample's real
frames when masks are given (segment i covers real frames [i·L/q, (i+1)·L/q), the last taking the remainder), so
the result does not depend on padding; without masks they are the reference's fixed chunks of T // q steps.

BatchNorm in training with a batch of one: the reference crashes; here that step normalises with the running
statistics instead (the affine parameters still train), so batch size 1 works and the parameter count and the
released weights' layout stay the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _GuardedBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that falls back to running statistics for a training batch of one."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class BlockAttentionStep(nn.Module):
    """One split-attention step over blocks (no segments). See the module docstring, steps 1-7."""

    def __init__(self, channels: Sequence[int], block_size: int, reduction: int) -> None:
        super().__init__()
        self.channels, self.block_size = list(channels), block_size
        self.n_blocks = [math.ceil(c / block_size) for c in self.channels]
        reduced = max(block_size // reduction, 1)
        self.joint = nn.Sequential(nn.Linear(block_size, reduced), _GuardedBatchNorm(reduced), nn.ReLU())
        self.excite = nn.ModuleList([nn.Linear(reduced, block_size) for _ in range(sum(self.n_blocks))])

    def forward(self, squeezed: Sequence[Tensor]) -> Tensor:
        """squeezed: per modality (B, C) -> α (B, N, C) softmax-normalised over the N blocks."""
        z = self.joint(torch.stack(list(squeezed)).sum(0))  # (B, C')
        logits = torch.stack([fc(z) for fc in self.excite], 1)  # (B, N, C)
        return logits.softmax(1)


class SplitAttentionFusion(nn.Module):
    """MSAF over M modalities. forward(inputs, masks=None) -> outputs of the same shapes (list or dict like the input).

    inputs: list or name-keyed dict of (B, C_m, *S_m); masks: optional matching list/dict of bool (B, T_m) for the
    modalities whose dim 2 is time (True = real step), None elsewhere.
    """

    def __init__(self, channels: Sequence[int], block_size: int, reduction: int = 4, dropout: float = 0.0,
                 lowest_atten: float = 0.0, split_block: int = 1, reference_compat: bool = False) -> None:
        super().__init__()
        if block_size < 1 or reduction < 1 or split_block < 1:
            raise ValueError("block_size, reduction and split_block must be positive")
        if not 0.0 <= dropout < 1.0 or not 0.0 <= lowest_atten < 1.0:
            raise ValueError(f"dropout and lowest_atten must lie in [0, 1), got {dropout} and {lowest_atten}")
        self.channels, self.block_size = list(channels), block_size
        self.dropout, self.lowest_atten, self.split_block = dropout, lowest_atten, split_block
        self.reference_compat = reference_compat
        self.n_blocks = [math.ceil(c / block_size) for c in self.channels]
        self.steps = nn.ModuleList([BlockAttentionStep(channels, block_size, reduction) for _ in range(split_block)])
        self.last_attention: Tensor | None = None  # (B, q, N, C) of the latest call, for inspection

    # --- helpers -------------------------------------------------------------------------------------------------
    def _blocks(self, x: Tensor, n: int) -> Tensor:
        """(B, C_m, *S) -> (B, n, C, *S), zero-padding the channel axis up to n·C."""
        pad = n * self.block_size - x.shape[1]
        if pad:
            x = torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], 1)
        return x.reshape(x.shape[0], n, self.block_size, *x.shape[2:])

    def _segments(self, x: Tensor, mask: Tensor | None) -> Tensor | None:
        """Segment index (B, T) in [0, q) of each time step, or None when q == 1."""
        q = self.split_block
        if q == 1:
            return None
        if x.dim() < 3:
            raise ValueError(f"split_block={q} needs a time axis (dim 2), but an input has shape {tuple(x.shape)}")
        B, T = x.shape[0], x.shape[2]
        if mask is None:
            if T < q:
                raise ValueError(f"split_block={q} needs at least {q} time steps, got {T}")
            pos = torch.arange(T, device=x.device).expand(B, T)
            length = torch.full((B, 1), T, device=x.device)
        else:
            pos = (mask.long().cumsum(1) - 1).clamp_min(0)
            length = mask.sum(1, keepdim=True)
        seg_len = (length // q).clamp_min(1)
        return torch.minimum(pos // seg_len, torch.full_like(pos, q - 1))

    # --- forward -------------------------------------------------------------------------------------------------
    def forward(self, inputs: Sequence[Tensor] | Mapping[str, Tensor],
                masks: Sequence[Tensor | None] | Mapping[str, Tensor] | None = None
                ) -> list[Tensor] | dict[str, Tensor]:
        keys = list(inputs) if isinstance(inputs, Mapping) else None
        xs = [inputs[k] for k in keys] if keys is not None else list(inputs)  # type: ignore[index]
        if keys is not None:
            ms = [masks.get(k) if isinstance(masks, Mapping) else None for k in keys] if masks else [None] * len(xs)
        else:
            ms = list(masks) if masks is not None else [None] * len(xs)  # type: ignore[arg-type]
        if [x.shape[1] for x in xs] != self.channels:
            raise ValueError(f"MSAF built for channels {self.channels}, got {[x.shape[1] for x in xs]}")
        B = xs[0].shape[0]
        blocks = [self._blocks(x, n) for x, n in zip(xs, self.n_blocks)]  # each (B, n_m, C, *S_m)
        if self.training and self.dropout > 0:
            keep = (torch.rand(B, sum(self.n_blocks), device=xs[0].device) >= self.dropout).to(xs[0].dtype)
            scale = keep / (1.0 - self.dropout)
            times = 2 if self.reference_compat else 1
            out_blocks, start = [], 0
            for b, n in zip(blocks, self.n_blocks):
                s = scale[:, start:start + n].reshape(B, n, *([1] * (b.dim() - 2)))
                out_blocks.append(b * s**times)
                start += n
            blocks = out_blocks
        segs = [self._segments(x, m) for x, m in zip(xs, ms)]
        alphas = []
        for i, step in enumerate(self.steps):
            squeezed = []
            for b, m, seg in zip(blocks, ms, segs):
                summed = b.sum(1)  # (B, C, *S)
                weight = None
                if m is not None:
                    weight = m.to(summed.dtype)
                if seg is not None:
                    in_seg = (seg == i).to(summed.dtype)
                    weight = in_seg if weight is None else weight * in_seg
                if weight is None:
                    squeezed.append(summed.flatten(2).mean(-1) if summed.dim() > 2 else summed)
                else:  # average over real (and in-segment) time steps and the other trailing dims
                    w = weight.reshape(B, 1, weight.shape[1], *([1] * (summed.dim() - 3)))
                    num = (summed * w).flatten(2).sum(-1)
                    den = (w.expand_as(summed[:, :1]).flatten(2).sum(-1)).clamp_min(1.0)
                    squeezed.append(num / den)
            alphas.append(step(squeezed))  # (B, N, C)
        alpha = torch.stack(alphas, 1)  # (B, q, N, C)
        alpha = self.lowest_atten + (1.0 - self.lowest_atten) * alpha
        self.last_attention = alpha.detach()
        outs, start = [], 0
        for x, b, n, seg in zip(xs, blocks, self.n_blocks, segs):
            a = alpha[:, :, start:start + n]  # (B, q, n, C)
            start += n
            if seg is None:
                scale = a[:, 0].reshape(B, n, self.block_size, *([1] * (b.dim() - 3)))
            else:  # per time step, the α of its segment: (B, n, C, T, 1...)
                per_t = a.gather(1, seg[:, :, None, None].expand(B, seg.shape[1], n, self.block_size))
                scale = per_t.permute(0, 2, 3, 1).reshape(B, n, self.block_size, seg.shape[1],
                                                          *([1] * (b.dim() - 4)))
            y = (b * scale).reshape(B, n * self.block_size, *b.shape[3:])[:, : x.shape[1]]
            outs.append(y)
        return dict(zip(keys, outs)) if keys is not None else outs


class SequenceSplitAttentionFusion(nn.Module):
    """Adapter for time-major sequence models: {m: (B, T_m, D_m)} with masks {m: (B, T_m)} -> same shapes.

    MSAF itself is channel-first (B, C, T); this adapter transposes in and out so any sequence model can drop it
    between two layers.
    """

    def __init__(self, dims: Mapping[str, int], block_size: int, reduction: int = 4, dropout: float = 0.0,
                 lowest_atten: float = 0.0, split_block: int = 1, reference_compat: bool = False) -> None:
        super().__init__()
        self.modalities = list(dims)
        self.msaf = SplitAttentionFusion([dims[m] for m in self.modalities], block_size, reduction, dropout,
                                         lowest_atten, split_block, reference_compat)

    def forward(self, x: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = self.msaf({m: x[m].transpose(1, 2) for m in self.modalities}, {m: masks[m] for m in self.modalities})
        return {m: out[m].transpose(1, 2) * masks[m][..., None].to(out[m].dtype) for m in self.modalities}

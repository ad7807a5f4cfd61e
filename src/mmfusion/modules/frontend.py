"""MEA's per-modality front end (docs/design/mea.md §1): Conv1d -> sinusoidal positions -> masked Bi-LSTM (or no
Bi-LSTM, or the Bi-LSTM with a residual connection around it)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmfusion.modules.dropout import Dropout
from mmfusion.modules.masking import positions_from_mask
from mmfusion.modules.rnn import MaskedLSTM


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """(length, dim) sine/cosine position table (Vaswani et al.). Under ``torch.device("meta")`` (a model planned
    for its sizes only, :func:`mmfusion.engine.model_plan.plan_model`) an empty table of that shape: arithmetic on meta
    tensors imports torch's compiler stack, which costs a one-clip ``mmfusion predict`` seconds."""
    if torch.empty(0).device.type == "meta":
        return torch.empty(length, dim)
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Adds sinusoidal embeddings indexed by the position *among real frames*, so padding side does not matter."""

    def __init__(self, dim: int, max_len: int = 4096) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        pos = positions_from_mask(mask)  # (B, T)
        if x.shape[1] > self.table.shape[0]:  # positions never exceed T - 1
            self.table = sinusoidal_table(2 * x.shape[1], x.shape[-1]).to(x.device)
        return x + self.table[pos].to(x.dtype) * mask[..., None].to(x.dtype)


class ModalityFrontEnd(nn.Module):
    """X_m (B, T, d_m) -> Z_m (B, T, D): Conv1d (kernel k, same padding) over the real frames, positions,
    Bi-LSTM with D/2 units per direction over the real frames only (:class:`MaskedLSTM`, equal to packed
    sequences). Padded frames of Z_m are zero.

    ``recurrent=False`` leaves the Bi-LSTM out (Z_m is the positioned convolution, as in MulT's front end). On a
    large draw of the built-in benchmark, MEA learns to match a cue in one stream to one of several events in
    another after 800-2,800 Adam steps without the recurrence (five seeds of five); with it, three seeds of five
    learned it, after ~4,400, ~6,800 and ~7,600 steps, and the other two had not by 8,000
    (docs/results/mea_synthetic_scale.md).

    ``residual=True`` keeps the Bi-LSTM and adds its input back: Z_m = H + BiLSTM(H), H the positioned convolution
    (zero at padded frames). Not the paper's; on the same draw it learned the matching within 2,000 steps in four
    seeds of five, the two that never did with the paper's front end among them (same page).
    """

    def __init__(self, input_dim: int, dim: int, kernel_size: int = 3, dropout: float = 0.0,
                 recurrent: bool = True, residual: bool = False) -> None:
        super().__init__()
        if residual and not recurrent:
            raise ValueError("residual=True adds the input around the Bi-LSTM, so it needs recurrent=True")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.conv = nn.Conv1d(input_dim, dim, kernel_size, padding=kernel_size // 2, bias=False)
        self.scale = math.sqrt(dim)  # embeddings scaled by sqrt(D) before positions are added (Vaswani; MulT)
        self.positions = SinusoidalPositions(dim)
        self.dropout = Dropout(dropout)
        self.lstm = MaskedLSTM(dim, dim // 2, bidirectional=True) if recurrent else None
        self.residual = residual

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x * mask[..., None].to(x.dtype)  # padding must not reach real frames through the kernel
        h = self.conv(x.transpose(1, 2)).transpose(1, 2) * self.scale  # (B, T, D)
        h = self.dropout(self.positions(h, mask))
        if self.lstm is None:
            return h * mask[..., None].to(h.dtype)  # zero at padding: the conv's edge reaches padded frames
        z = self.lstm(h, mask)[0]  # zero at padding; padded input frames are never read
        return h * mask[..., None].to(h.dtype) + z if self.residual else z

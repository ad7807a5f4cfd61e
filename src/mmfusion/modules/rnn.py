"""An LSTM that reads its lengths from the mask (packed sequences), so padding never enters the recurrence."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmfusion.modules.masking import compact, uncompact


class MaskedLSTM(nn.Module):
    """``nn.LSTM`` (batch first) over the real frames only.

    forward(x (B, T, d_in), mask (B, T)) -> (outputs (B, T, H·dirs) with zeros at padding, in the input's frame
    positions; final (B, H·dirs): the last layer's final state, forward and backward concatenated). A row with
    no real frame gives zeros.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.out_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN has no bfloat16 LSTM for every CPU/shape ("could not create a primitive descriptor"): the
            # recurrence is small, so it runs in float32 under CPU mixed precision
            with torch.autocast("cpu", enabled=False):
                return self.forward(x.float(), mask)
        dirs = 2 if self.lstm.bidirectional else 1
        if mask.shape[1] > 0 and bool(mask.all()):  # nothing padded (e.g. one clip): no packing needed
            out, (h, _) = self.lstm(x)
            return out, torch.cat([h[-dirs + k] for k in range(dirs)], dim=-1)
        xc, lengths, order = compact(x, mask)
        packed = pack_padded_sequence(xc, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)  # (B, T_max, H·dirs)
        final = torch.cat([h[-dirs + k] for k in range(dirs)], dim=-1)  # (B, H·dirs)
        present = (lengths > 0).to(x.dtype)[:, None]
        return uncompact(out, order, mask), final * present

"""An LSTM that reads its lengths from the mask, so padding never enters the recurrence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmfusion.batch import lengths_to_mask
from mmfusion.modules.masking import compact, take_time, uncompact


class MaskedLSTM(nn.Module):
    """``nn.LSTM`` (batch first) over the real frames only.

    forward(x (B, T, d_in), mask (B, T)) -> (outputs (B, T, H·dirs) with zeros at padding, in the input's frame
    positions; final (B, H·dirs): the last layer's final state, forward and backward concatenated). A row with
    no real frame gives zeros.

    Each row's real frames are moved to the front (so the padding any mask describes comes after them) and the
    recurrence runs over the whole padded block: a frame's output never depends on the frames after it, so the
    padding at the end cannot reach a real frame. The backward direction runs forward over each row's real frames
    reversed in place. The results equal ``nn.LSTM`` on packed sequences (tested, values and gradients), in about a
    fifth of the time on a CPU: PyTorch runs packed sequences one time step at a time there (~10,000 operators for
    a batch of 32 at 36 frames), against one fused oneDNN call per direction. On other devices (cuDNN handles packed
    sequences natively) the packed form is used.
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
        if mask.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.out_dim), x.new_zeros(x.shape[0], self.out_dim)
        if bool(mask.all()):  # nothing padded (e.g. one clip): the plain call
            out, (h, _) = self.lstm(x)
            return out, torch.cat([h[-dirs + k] for k in range(dirs)], dim=-1)
        if x.device.type == "cpu":
            return self._forward_in_place(x, mask)
        return self._forward_packed(x, mask)

    def _forward_in_place(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Real frames first, then one ``torch.lstm`` call per layer and direction over the padded block."""
        lstm = self.lstm
        xc, lengths, order = compact(x, mask)
        B, T, _ = xc.shape
        real = lengths_to_mask(lengths, T)  # (B, T): the compacted mask
        # within-length reversal (an involution): real frame t <-> lengths - 1 - t, padding stays where it is
        t = torch.arange(T, device=x.device)[None]
        rev = torch.where(real, lengths[:, None] - 1 - t, t)
        last = (lengths - 1).clamp_min(0)[:, None, None].expand(-1, 1, lstm.hidden_size)
        h = torch.where(real[..., None], xc, 0.0)  # zeros in the padding: nothing non-finite enters either pass
        h0 = h.new_zeros(1, B, lstm.hidden_size)
        finals: list[Tensor] = []
        for layer in range(lstm.num_layers):
            if layer > 0 and lstm.dropout > 0:
                h = F.dropout(h, lstm.dropout, self.training)
            outs, finals = [], []
            for d in range(2 if lstm.bidirectional else 1):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                weights = [getattr(lstm, name + sfx) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                           if hasattr(lstm, name + sfx)]
                y = torch.lstm(h if d == 0 else take_time(h, rev), (h0, h0), weights, lstm.bias, 1, 0.0,
                               self.training, False, True)[0]  # (B, T, H)
                finals.append(y.gather(1, last)[:, 0])  # the state after the row's last real step
                outs.append(y if d == 0 else take_time(y, rev))
            h = torch.cat(outs, dim=-1)
        present = (lengths > 0)[:, None]
        return uncompact(h, order, mask), torch.where(present, torch.cat(finals, dim=-1), 0.0)

    def _forward_packed(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        dirs = 2 if self.lstm.bidirectional else 1
        xc, lengths, order = compact(x, mask)
        packed = pack_padded_sequence(xc, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True)  # (B, T_max, H·dirs)
        final = torch.cat([h[-dirs + k] for k in range(dirs)], dim=-1)  # (B, H·dirs)
        present = (lengths > 0)[:, None]  # an empty row was packed as one (padding) frame: its state is dropped
        return uncompact(out, order, mask), torch.where(present, final, 0.0)

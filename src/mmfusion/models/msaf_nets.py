"""MSAF networks (Su et al., arXiv 2012.07175; spec ``msaf.md`` §2).

``msaf_lstm`` — the paper's sentiment network: per modality two stacked single-layer LSTMs with MSAF between them
on (B, H, T) (C=16, r=2, p=0.2, q=5), the last real step of each modality concatenated (224 = 128 + 32 + 64) and
a linear head. Packed sequences and masks make it padding-invariant, including MSAF's squeeze and segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_checked
from mmfusion.models.registry import register_model
from mmfusion.modules.masking import masked_last
from mmfusion.modules.msaf import SequenceSplitAttentionFusion
from mmfusion.modules.rnn import MaskedLSTM


@dataclass
class MSAFLSTMConfig:
    hidden: dict[str, int] = field(default_factory=lambda: {"text": 128, "vision": 32, "audio": 64})
    block_size: int = 16  # C
    reduction: int = 2  # r
    block_dropout: float = 0.2  # p
    lowest_atten: float = 0.0  # γ
    split_block: int = 5  # q time segments
    reference_compat: bool = False  # double-applied block dropout, as in the authors' code
    use_msaf: bool = True  # False: the same network without fusion between the LSTM layers


class MSAFLSTM(nn.Module):
    """features {m: (B, T_m, d_m)}, masks {m: (B, T_m)} -> {"pred": (B, output_dim), "inspect": {"msaf": α}}."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: MSAFLSTMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        hidden = {m: c.hidden.get(m, 64) for m in self.modalities}
        self.lstm1 = nn.ModuleDict({m: MaskedLSTM(feature_dims[m], hidden[m]) for m in self.modalities})
        self.msaf = SequenceSplitAttentionFusion(hidden, c.block_size, c.reduction, c.block_dropout, c.lowest_atten,
                                                 c.split_block, c.reference_compat) if c.use_msaf else None
        self.lstm2 = nn.ModuleDict({m: MaskedLSTM(hidden[m], hidden[m]) for m in self.modalities})
        self.head = nn.Linear(sum(hidden.values()), output_dim)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "msaf_lstm")
        h = {m: self.lstm1[m](features[m], masks[m])[0] for m in self.modalities}  # (B, T_m, H_m)
        if self.msaf is not None:
            h = self.msaf(h, masks)
        h = {m: self.lstm2[m](h[m], masks[m])[0] for m in self.modalities}
        last = torch.cat([masked_last(h[m], masks[m]) for m in self.modalities], -1)  # (B, ΣH_m)
        inspect = {"msaf": self.msaf.msaf.last_attention} if self.msaf is not None else {}
        return {"pred": self.head(last), "inspect": inspect}


@register_model(MSAFLSTMConfig)
def msaf_lstm(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFLSTM:
    """The paper's CMU-MOSEI network (about 0.69 M parameters with BERT text features)."""
    return MSAFLSTM(feature_dims, output_dim, build_checked(MSAFLSTMConfig, overrides, source="msaf_lstm"))


@register_model(MSAFLSTMConfig)
def msaf_lstm_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFLSTM:
    overrides = {"hidden": {"text": 16, "vision": 8, "audio": 12}, "block_size": 4, "split_block": 2, **overrides}
    return MSAFLSTM(feature_dims, output_dim, build_checked(MSAFLSTMConfig, overrides, source="msaf_lstm_tiny"))

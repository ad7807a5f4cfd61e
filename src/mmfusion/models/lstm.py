"""Recurrent baselines. ``lf_lstm``: late fusion — one LSTM per modality, final states concatenated, MLP head."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_checked
from mmfusion.models.registry import register_model
from mmfusion.modules.rnn import MaskedLSTM


@dataclass
class LateFusionLSTMConfig:
    hidden: int = 64  # LSTM units per modality
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.1  # on the fused vector
    head_hidden: int = 64


class LateFusionLSTM(nn.Module):
    """Late-fusion LSTM: per modality m, ``h_m = LSTM_m(LayerNorm(x_m))`` over the real frames; prediction
    ``MLP([h_text; h_vision; h_audio])``. Shapes: features (B, T_m, d_m), masks (B, T_m) -> pred (B, output_dim)."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: LateFusionLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        self.norms = nn.ModuleDict({m: nn.LayerNorm(feature_dims[m]) for m in self.modalities})
        self.encoders = nn.ModuleDict({
            m: MaskedLSTM(feature_dims[m], config.hidden, config.num_layers, config.bidirectional)
            for m in self.modalities
        })
        fused = sum(enc.out_dim for enc in self.encoders.values())
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(fused, config.head_hidden), nn.ReLU(),
            nn.Linear(config.head_hidden, output_dim),
        )

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "lf_lstm")
        states = [self.encoders[m](self.norms[m](features[m]), masks[m])[1] for m in self.modalities]
        return {"pred": self.head(torch.cat(states, dim=-1))}


@register_model(LateFusionLSTMConfig)
def lf_lstm(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> LateFusionLSTM:
    return LateFusionLSTM(feature_dims, output_dim, build_checked(LateFusionLSTMConfig, overrides, source="lf_lstm"))


@register_model(LateFusionLSTMConfig)
def lf_lstm_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> LateFusionLSTM:
    overrides = {"hidden": 8, "head_hidden": 8, **overrides}
    return LateFusionLSTM(feature_dims, output_dim, build_checked(LateFusionLSTMConfig, overrides,
                                                                  source="lf_lstm_tiny"))

"""Recurrent baselines. ``lf_lstm``: late fusion — one LSTM per modality, final states concatenated, MLP head."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_model_config
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
    return LateFusionLSTM(feature_dims, output_dim,
                          build_model_config(LateFusionLSTMConfig, overrides, source="lf_lstm"))


@register_model(LateFusionLSTMConfig)
def lf_lstm_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> LateFusionLSTM:
    overrides = {"hidden": 8, "head_hidden": 8, **overrides}
    return LateFusionLSTM(feature_dims, output_dim,
                          build_model_config(LateFusionLSTMConfig, overrides, source="lf_lstm_tiny"))


@dataclass
class EarlyFusionLSTMConfig:
    steps: int = 32  # common length every modality is resampled to
    hidden: int = 64
    num_layers: int = 1
    dropout: float = 0.1


def resample(x: Tensor, mask: Tensor, steps: int) -> Tensor:
    """Average each sample's real frames into ``steps`` equal bins of its own length: (B, T, d) -> (B, steps, d).

    Bins are defined on the real frames only (their order among real frames), so padding never enters; a sample
    shorter than ``steps`` repeats frames. A sample with no real frame gives zeros.
    """
    B, T, _ = x.shape
    pos = (mask.long().cumsum(1) - 1).float()  # (B, T) index among real frames
    length = mask.sum(1, keepdim=True).float().clamp_min(1.0)  # (B, 1)
    t = torch.arange(steps, device=x.device, dtype=torch.float32)[None, :, None]  # (1, steps, 1)
    start = torch.floor(t * length[:, None] / steps)  # (B, steps, 1)
    end = torch.maximum(torch.ceil((t + 1) * length[:, None] / steps), start + 1)
    inside = (pos[:, None, :] >= start) & (pos[:, None, :] < end) & mask[:, None, :]  # (B, steps, T)
    w = inside.to(x.dtype)
    return (w @ x) / w.sum(-1, keepdim=True).clamp_min(1.0)


class EarlyFusionLSTM(nn.Module):
    """Early fusion: every modality resampled to a common length, concatenated per step, one LSTM, linear head."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: EarlyFusionLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        total = sum(feature_dims[m] for m in self.modalities)
        self.norm = nn.LayerNorm(total)
        self.lstm = MaskedLSTM(total, config.hidden, config.num_layers)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden, output_dim))

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "ef_lstm")
        x = torch.cat([resample(features[m], masks[m], self.config.steps) for m in self.modalities], -1)
        steps = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return {"pred": self.head(self.lstm(self.norm(x), steps)[1])}


@register_model(EarlyFusionLSTMConfig)
def ef_lstm(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> EarlyFusionLSTM:
    return EarlyFusionLSTM(feature_dims, output_dim,
                           build_model_config(EarlyFusionLSTMConfig, overrides, source="ef_lstm"))


@register_model(EarlyFusionLSTMConfig)
def ef_lstm_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> EarlyFusionLSTM:
    overrides = {"steps": 6, "hidden": 8, **overrides}
    return EarlyFusionLSTM(feature_dims, output_dim,
                           build_model_config(EarlyFusionLSTMConfig, overrides, source="ef_lstm_tiny"))

"""MISA: modality-invariant and -specific representations (Hazarika et al., ACM MM 2020), on feature inputs.

Each modality's utterance vector (a Bi-LSTM over its real frames, projected to D) is mapped to a shared
(invariant) code by one shared encoder and to a private (specific) code by its own encoder. Losses: CMD between
the shared codes of every modality pair (similarity), soft orthogonality between private and shared codes and
between private codes (difference), and reconstruction of the utterance vector from private + shared. The six codes
go through a small transformer and an MLP head. It is the closest relative of MEA's decomposition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_model_config
from mmfusion.models.registry import register_model
from mmfusion.modules.attention import Attention, check_attention
from mmfusion.modules.hca import ModalityReinforcementUnit
from mmfusion.modules.losses import cmd, soft_orthogonality
from mmfusion.modules.rnn import MaskedLSTM


@dataclass
class MISAConfig:
    """MISA's MOSI settings: loss weights diff 0.3, sim 1.0 (CMD, 5 moments), recon 1.0."""

    hidden: int = 64  # D
    lstm_hidden: int = 64
    num_heads: int = 2
    dropout: float = 0.1
    diff_weight: float = 0.3
    sim_weight: float = 1.0
    recon_weight: float = 1.0
    cmd_moments: int = 5
    attention: Attention = "auto"  # how the fusion's attention runs; see mmfusion.modules.attention

    def validate(self, source: str | None = None) -> None:
        check_attention(self.attention, head_dim=self.hidden // max(self.num_heads, 1), source=source)


class MISA(nn.Module):
    """features {m: (B, T_m, d_m)}, masks -> {"pred", "losses": {"diff", "sim", "recon"}, "inspect": codes}."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: MISAConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        D = c.hidden
        self.encoders = nn.ModuleDict({m: MaskedLSTM(feature_dims[m], c.lstm_hidden, bidirectional=True)
                                       for m in self.modalities})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(2 * c.lstm_hidden, D), nn.ReLU(), nn.LayerNorm(D))
                                      for m in self.modalities})
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(D, D), nn.Sigmoid()) for m in self.modalities})
        self.shared = nn.Sequential(nn.Linear(D, D), nn.Sigmoid())
        self.recon = nn.ModuleDict({m: nn.Linear(D, D) for m in self.modalities})
        self.fusion = ModalityReinforcementUnit(D, c.num_heads, 0.0, c.dropout, c.attention)
        k = 2 * len(self.modalities)
        self.head = nn.Sequential(nn.Linear(k * D, k * D // 2), nn.Dropout(c.dropout), nn.ReLU(),
                                  nn.Linear(k * D // 2, output_dim))

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "misa")
        c = self.config
        u = {m: self.project[m](self.encoders[m](features[m], masks[m])[1]) for m in self.modalities}  # (B, D)
        priv = {m: self.private[m](u[m]) for m in self.modalities}
        shar = {m: self.shared(u[m]) for m in self.modalities}
        diff = sum(soft_orthogonality(priv[m], shar[m]) for m in self.modalities)
        diff = diff + sum(soft_orthogonality(priv[a], priv[b]) for a, b in combinations(self.modalities, 2))
        sim = sum(cmd(shar[a], shar[b], c.cmd_moments) for a, b in combinations(self.modalities, 2)) / 3
        recon = sum(F.mse_loss(self.recon[m](priv[m] + shar[m]), u[m]) for m in self.modalities) / 3
        tokens = torch.stack([priv[m] for m in self.modalities] + [shar[m] for m in self.modalities], 1)  # (B, 6, D)
        every = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        fused, _ = self.fusion(tokens, every, tokens, every)
        losses = {"diff": c.diff_weight * diff, "sim": c.sim_weight * sim, "recon": c.recon_weight * recon}
        return {"pred": self.head(fused.flatten(1)), "losses": losses,
                "inspect": {"codes": {"private": torch.stack(list(priv.values()), 1),
                                      "shared": torch.stack(list(shar.values()), 1)}}}


@register_model(MISAConfig)
def misa(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MISA:
    return MISA(feature_dims, output_dim, build_model_config(MISAConfig, overrides, source="misa"))


@register_model(MISAConfig)
def misa_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MISA:
    overrides = {"hidden": 8, "lstm_hidden": 6, **overrides}
    return MISA(feature_dims, output_dim, build_model_config(MISAConfig, overrides, source="misa_tiny"))

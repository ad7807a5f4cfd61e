"""Tensor fusion (TFN, Zadeh et al. 2017) and low-rank multimodal fusion (LMF, Liu et al. 2018).

Both encode each modality to a vector — an LSTM over the text (its final state over the real words), masked mean
pooling plus an MLP for vision and audio, as in the originals — then fuse the vectors, each extended by a constant 1:
TFN takes their full outer product, LMF a rank-R factorisation of the same multilinear map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_model_config
from mmfusion.models.registry import register_model
from mmfusion.modules.masking import masked_mean
from mmfusion.modules.rnn import MaskedLSTM


class SubNets(nn.Module):
    """Per-modality encoders: text -> LSTM final state; others -> masked mean -> MLP. Returns {m: (B, h_m)}."""

    def __init__(self, feature_dims: Mapping[str, int], hidden: Mapping[str, int], dropout: float) -> None:
        super().__init__()
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        self.text = MaskedLSTM(feature_dims["text"], hidden["text"]) if "text" in feature_dims else None
        self.mlps = nn.ModuleDict({
            m: nn.Sequential(nn.LayerNorm(feature_dims[m]), nn.Dropout(dropout), nn.Linear(feature_dims[m], hidden[m]),
                             nn.ReLU(), nn.Linear(hidden[m], hidden[m]), nn.ReLU())
            for m in self.modalities if m != "text"})

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for m in self.modalities:
            if m == "text" and self.text is not None:
                out[m] = self.text(features[m], masks[m])[1]
            else:
                out[m] = self.mlps[m](masked_mean(features[m], masks[m]))
        return out


def _with_one(h: Tensor) -> Tensor:
    return torch.cat([h, h.new_ones(h.shape[0], 1)], -1)


@dataclass
class TFNConfig:
    hidden: dict[str, int] = field(default_factory=lambda: {"text": 32, "vision": 16, "audio": 8})
    post_fusion: int = 64
    dropout: float = 0.2


class TFN(nn.Module):
    """z = vec((h_t;1) ⊗ (h_v;1) ⊗ (h_a;1)) -> MLP -> prediction."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: TFNConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        hidden = {m: c.hidden.get(m, 16) for m in self.modalities}
        self.subnets = SubNets(feature_dims, hidden, c.dropout)
        size = 1
        for m in self.modalities:
            size *= hidden[m] + 1
        self.head = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(size, c.post_fusion), nn.ReLU(),
                                  nn.Linear(c.post_fusion, c.post_fusion), nn.ReLU(),
                                  nn.Linear(c.post_fusion, output_dim))

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "tfn")
        h = self.subnets(features, masks)
        z = _with_one(h[self.modalities[0]])
        for m in self.modalities[1:]:
            z = torch.einsum("bi,bj->bij", z, _with_one(h[m])).flatten(1)  # outer product, flattened
        return {"pred": self.head(z)}


@dataclass
class LMFConfig:
    hidden: dict[str, int] = field(default_factory=lambda: {"text": 32, "vision": 16, "audio": 8})
    rank: int = 4
    fused: int = 32
    dropout: float = 0.2


class LMF(nn.Module):
    """Low-rank fusion: z = Σ_r w_r · Π_m ((h_m;1) W_m^(r)) + b, then a linear head."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: LMFConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        hidden = {m: c.hidden.get(m, 16) for m in self.modalities}
        self.subnets = SubNets(feature_dims, hidden, c.dropout)
        self.factors = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_normal_(torch.empty(c.rank, hidden[m] + 1, c.fused)))
            for m in self.modalities})
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, c.rank)))
        self.bias = nn.Parameter(torch.zeros(c.fused))
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(c.fused, output_dim))

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "lmf")
        h = self.subnets(features, masks)
        prod = None
        for m in self.modalities:
            f = torch.einsum("bi,rio->rbo", _with_one(h[m]), self.factors[m])  # (R, B, fused)
            prod = f if prod is None else prod * f
        z = torch.einsum("r,rbo->bo", self.rank_weights[0], prod) + self.bias
        return {"pred": self.head(z)}


@register_model(TFNConfig)
def tfn(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> TFN:
    return TFN(feature_dims, output_dim, build_model_config(TFNConfig, overrides, source="tfn"))


@register_model(TFNConfig)
def tfn_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> TFN:
    overrides = {"hidden": {"text": 4, "vision": 3, "audio": 2}, "post_fusion": 8, **overrides}
    return TFN(feature_dims, output_dim, build_model_config(TFNConfig, overrides, source="tfn_tiny"))


@register_model(LMFConfig)
def lmf(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> LMF:
    return LMF(feature_dims, output_dim, build_model_config(LMFConfig, overrides, source="lmf"))


@register_model(LMFConfig)
def lmf_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> LMF:
    overrides = {"hidden": {"text": 4, "vision": 3, "audio": 2}, "rank": 2, "fused": 8, **overrides}
    return LMF(feature_dims, output_dim, build_model_config(LMFConfig, overrides, source="lmf_tiny"))

"""MulT: Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019), with padding masks.

Conv1d projections to a common width D, sinusoidal positions (from the mask), six directional cross-modal
transformers (target ← source for every ordered pair), per target a self-attention memory over the two
concatenated cross-modal streams (2D), the last real step of each memory concatenated (6D), and MulT's residual
head. Attention takes key-padding masks: unlike the public implementation, no query ever attends to zero padding,
so predictions do not depend on how much padding a batch has. How it runs is the ``attention`` setting
(:mod:`mmfusion.modules.attention`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_model_config
from mmfusion.models.registry import register_model
from mmfusion.modules.attention import Attention, check_attention
from mmfusion.modules.dropout import dropout
from mmfusion.modules.frontend import SinusoidalPositions
from mmfusion.modules.hca import ModalityReinforcementUnit
from mmfusion.modules.masking import masked_last


@dataclass
class MulTConfig:
    """MulT's published MOSI settings (d=30, 5 heads, 4 layers in its released config)."""

    dim: int = 30
    num_heads: int = 5
    layers: int = 4  # cross-modal layers per direction
    memory_layers: int = 3  # self-attention layers of each memory
    kernel_size: int = 1  # of the Conv1d projections
    embed_dropout: float = 0.25
    attn_dropout: float = 0.0  # MulT uses 0.1; opt-in for CPU speed (see MEAConfig.attn_dropout)
    res_dropout: float = 0.1
    out_dropout: float = 0.0
    attention: Attention = "auto"  # how attention runs; see mmfusion.modules.attention

    def validate(self, source: str | None = None) -> None:
        # (the memories' heads are wider: len(modalities) - 1 times; their modules check them when built)
        check_attention(self.attention, head_dim=self.dim // max(self.num_heads, 1), dropout=self.attn_dropout,
                        source=source)


class CrossmodalTransformer(nn.Module):
    """A stack of pre-LN cross-attention layers: target (B, T, D) attends to source (B, S, D), masked."""

    def __init__(self, dim: int, num_heads: int, layers: int, attn_dropout: float, res_dropout: float,
                 attention: Attention = "auto") -> None:
        super().__init__()
        self.layers = nn.ModuleList([ModalityReinforcementUnit(dim, num_heads, attn_dropout, res_dropout, attention)
                                     for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, target: Tensor, target_mask: Tensor, source: Tensor | None = None,
                source_mask: Tensor | None = None) -> Tensor:
        x = target
        for layer in self.layers:
            src, src_mask = (x, target_mask) if source is None else (source, source_mask)  # None: self-attention
            x, _ = layer(x, target_mask, src, src_mask)
        return self.norm(x) * target_mask[..., None].to(x.dtype)


class MulT(nn.Module):
    """features {m: (B, T_m, d_m)}, masks {m: (B, T_m)} -> {"pred": (B, output_dim)}."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: MulTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        self.proj = nn.ModuleDict({m: nn.Conv1d(feature_dims[m], c.dim, c.kernel_size, padding=c.kernel_size // 2,
                                                bias=False) for m in self.modalities})
        self.positions = SinusoidalPositions(c.dim)
        self.cross = nn.ModuleDict({
            f"{t}_from_{s}": CrossmodalTransformer(c.dim, c.num_heads, c.layers, c.attn_dropout, c.res_dropout,
                                                   c.attention)
            for t in self.modalities for s in self.modalities if s != t})
        k = len(self.modalities) - 1
        self.memory = nn.ModuleDict({t: CrossmodalTransformer(k * c.dim, c.num_heads, c.memory_layers, c.attn_dropout,
                                                              c.res_dropout, c.attention) for t in self.modalities})
        combined = len(self.modalities) * k * c.dim
        self.proj1, self.proj2 = nn.Linear(combined, combined), nn.Linear(combined, combined)
        self.out = nn.Linear(combined, output_dim)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "mult")
        c = self.config
        h = {}
        for m in self.modalities:
            x = features[m] * masks[m][..., None].to(features[m].dtype)
            x = self.proj[m](x.transpose(1, 2)).transpose(1, 2) * math.sqrt(c.dim)  # (B, T_m, D)
            h[m] = dropout(self.positions(x, masks[m]), c.embed_dropout, self.training)
        last = []
        for t in self.modalities:
            streams = [self.cross[f"{t}_from_{s}"](h[t], masks[t], h[s], masks[s]) for s in self.modalities if s != t]
            mem = self.memory[t](torch.cat(streams, -1), masks[t])  # (B, T_t, 2D)
            last.append(masked_last(mem, masks[t]))
        z = torch.cat(last, -1)  # (B, 6D)
        z = self.proj2(F.dropout(F.relu(self.proj1(z)), c.out_dropout, self.training)) + z  # MulT's residual head
        return {"pred": self.out(z)}


@register_model(MulTConfig)
def mult(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MulT:
    return MulT(feature_dims, output_dim, build_model_config(MulTConfig, overrides, source="mult"))


@register_model(MulTConfig)
def mult_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MulT:
    overrides = {"dim": 8, "num_heads": 2, "layers": 1, "memory_layers": 1, **overrides}
    return MulT(feature_dims, output_dim, build_model_config(MulTConfig, overrides, source="mult_tiny"))

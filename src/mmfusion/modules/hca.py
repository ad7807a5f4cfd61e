"""Hierarchical Cross-modal Attention (docs/design/mea.md §3) built from Modality Reinforcement Units.

MRU(source, target): pre-LN multi-head cross-attention (queries from the target, keys/values from the source,
masked on padded source frames), residual to the target, then a residual FFN. How its attention runs is the
model's ``attention`` setting (:mod:`mmfusion.modules.attention`); asking for the map runs the eager path.

One HCA layer, for each target t with the other modalities s1, s2:
1. mixed-grained  Ẑ = MRU(concat_time(Z_L, Z_V, Z_A), Z_t)
2. coarse-grained Ž = MRU(concat_time(Z_s1, Z_s2), Ẑ)
3. fine-grained   Z^a_t = MRU(Z_s1, Ž) + MRU(Z_s2, Ž)
Targets are updated across layers; sources are always the front-end outputs Z_m (MulT convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from mmfusion.modules.attention import Attention, FeedForward, MultiHeadAttention
from mmfusion.modules.dropout import Dropout
from mmfusion.modules.masking import concat_time

Source = tuple[Tensor, Tensor]
"""A cross-attention source: features (B, S, D) and mask (B, S)."""


class ModalityReinforcementUnit(nn.Module):
    """target (B, T, D), source (B, S, D), masks (B, T) / (B, S) -> (B, T, D) and optionally the map (B, H, T, S)."""

    def __init__(self, dim: int, num_heads: int, attn_dropout: float = 0.0, res_dropout: float = 0.0,
                 attention: Attention = "auto") -> None:
        super().__init__()
        self.norm_target, self.norm_source, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, attn_dropout, attention)
        self.ffn = FeedForward(dim, 4, res_dropout)
        self.dropout = Dropout(res_dropout)

    def forward(self, target: Tensor, target_mask: Tensor, source: Tensor, source_mask: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        h, attn = self.attn(self.norm_target(target), self.norm_source(source), source_mask, need_weights)
        x = target + self.dropout(h)
        x = x + self.ffn(self.norm_ffn(x))
        return x * target_mask[..., None].to(x.dtype), attn


class HCALayer(nn.Module):
    """The 4 MRUs of one target (mixed, coarse, fine ×2); any of the three levels can be switched off."""

    def __init__(self, dim: int, num_heads: int, *, mixed: bool = True, coarse: bool = True, fine: bool = True,
                 attn_dropout: float = 0.0, res_dropout: float = 0.0, attention: Attention = "auto") -> None:
        super().__init__()

        def mru() -> ModalityReinforcementUnit:
            return ModalityReinforcementUnit(dim, num_heads, attn_dropout, res_dropout, attention)

        self.mixed = mru() if mixed else None
        self.coarse = mru() if coarse else None
        self.fine = nn.ModuleList([mru(), mru()]) if fine else None

    def forward(self, target: Tensor, target_mask: Tensor, mixed: Source, coarse: Source,
                fine: Mapping[str, Source], need_weights: bool = False) -> tuple[Tensor, dict[str, Tensor | None]]:
        """target (B, T, D); each source a (features (B, S, D), mask (B, S)) pair: ``mixed`` all modalities
        concatenated in time, ``coarse`` the other two concatenated, ``fine`` each other modality alone."""
        maps: dict[str, Tensor | None] = {}
        x = target
        if self.mixed is not None:
            x, maps["mixed"] = self.mixed(x, target_mask, *mixed, need_weights)
        if self.coarse is not None:
            x, maps["coarse"] = self.coarse(x, target_mask, *coarse, need_weights)
        if self.fine is not None:
            outs = []
            for mru, (s, src) in zip(self.fine, fine.items()):
                y, maps[f"fine_{s}"] = mru(x, target_mask, *src, need_weights)
                outs.append(y)
            x = sum(outs[1:], outs[0])
        return x, maps


class HierarchicalCrossModalAttention(nn.Module):
    """N HCA layers over every target modality: {m: Z_m (B, T_m, D)} -> {m: Z^a_m (B, T_m, D)} (+ maps)."""

    def __init__(self, modalities: Sequence[str], dim: int, num_heads: int, num_layers: int, *, mixed: bool = True,
                 coarse: bool = True, fine: bool = True, attn_dropout: float = 0.0, res_dropout: float = 0.0,
                 attention: Attention = "auto") -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.layers = nn.ModuleList([
            nn.ModuleDict({t: HCALayer(dim, num_heads, mixed=mixed, coarse=coarse, fine=fine, attn_dropout=attn_dropout,
                                       res_dropout=res_dropout, attention=attention) for t in self.modalities})
            for _ in range(num_layers)
        ])
        self.norms = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})

    def forward(self, z: Mapping[str, Tensor], masks: Mapping[str, Tensor], need_weights: bool = False
                ) -> tuple[dict[str, Tensor], dict[str, list[dict[str, Tensor | None]]]]:
        targets = dict(z)
        maps: dict[str, list[dict[str, Tensor | None]]] = {t: [] for t in self.modalities}
        # the sources are the same in every layer: concatenate them once
        mixed = concat_time([z[m] for m in self.modalities], [masks[m] for m in self.modalities])
        others = {t: [m for m in self.modalities if m != t] for t in self.modalities}
        coarse = {t: concat_time([z[m] for m in others[t]], [masks[m] for m in others[t]]) for t in self.modalities}
        fine = {t: {m: (z[m], masks[m]) for m in others[t]} for t in self.modalities}
        for layer in self.layers:
            new = {}
            for t in self.modalities:
                new[t], layer_maps = layer[t](targets[t], masks[t], mixed, coarse[t], fine[t], need_weights)
                maps[t].append(layer_maps)
            targets = new
        out = {t: self.norms[t](x) * masks[t][..., None].to(x.dtype) for t, x in targets.items()}
        return out, maps

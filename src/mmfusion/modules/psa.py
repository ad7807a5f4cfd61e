"""Predictive Self-Attention (MEA spec §2): self-attention whose map is partly predicted from the previous layer's.

Layer l computes logits S_l = Q Kᵀ / sqrt(D_h) (B, H, T, T). From layer 2 on, the previous layer's logits, seen as
an H-channel image, predict this layer's map: P_l = GELU(Conv2d_{H->H, 3x3, same}(S_{l-1})). Mixing:

- ``"logits"`` (default): A_l = softmax(µ·P_l + (1-µ)·S_l); µ = 0 is plain attention.
- ``"literal"`` (Eq. 2 as printed): A_l = softmax(µ·P_l + (1-µ)·softmax(S_l)).

Both softmaxes run over real keys only. The logits handed to the next layer are zero outside the real
(query, key) block, so the 3x3 convolution sees the same zero border whatever the padding side or amount.
The attention maps are needed for the chain, so this block uses the eager path, not SDPA.
"""

from __future__ import annotations

import math
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.modules.attention import FeedForward, masked_softmax, merge_heads, split_heads


class PredictiveSelfAttentionLayer(nn.Module):
    """One pre-LN PSA layer: residual (predictive) self-attention, then a residual FFN (width 4D, GELU).

    forward(x (B, T, D), mask (B, T), prev_logits (B, H, T, T) or None, need_vanilla)
      -> (x (B, T, D), logits S_l (B, H, T, T) masked to 0, maps {"psa": A_l[, "vanilla": softmax(S_l)]});
    the plain map is computed in training only where the layer needs it, or with ``need_vanilla``.
    """

    def __init__(self, dim: int, num_heads: int, *, predict: bool, mu: float,
                 mixing: Literal["logits", "literal"] = "logits", attn_dropout: float = 0.0,
                 res_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.mu, self.mixing = num_heads, mu, mixing
        self.norm_attn, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        # the prediction chain: previous logit maps (H channels) -> this layer's (H channels)
        self.predictor = nn.Conv2d(num_heads, num_heads, 3, padding=1) if predict else None
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.res_dropout = nn.Dropout(res_dropout)
        self.ffn = FeedForward(dim, 4, res_dropout)

    def forward(self, x: Tensor, mask: Tensor, prev_logits: Tensor | None = None, need_vanilla: bool = False
                ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(self.norm_attn(x)).chunk(3, -1))  # (B, H, T, D_h)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # S_l (B, H, T, T)
        pair = (mask[:, None, :, None] & mask[:, None, None, :]).to(logits.dtype)  # real (query, key) cells
        logits = logits * pair
        predictive = self.predictor is not None and prev_logits is not None and self.mu > 0
        # plain softmax(S_l): the map itself without prediction, Eq. 2's inner term, or asked for comparison
        vanilla = masked_softmax(logits, mask) if (need_vanilla or not predictive or self.mixing == "literal") \
            else None
        if predictive:
            pred = F.gelu(self.predictor(prev_logits)) * pair  # P_l (B, H, T, T)
            base = logits if self.mixing == "logits" else vanilla
            attn = masked_softmax(self.mu * pred + (1.0 - self.mu) * base, mask)
        else:
            attn = vanilla
        attn = attn * mask[:, None, :, None].to(attn.dtype)  # padded queries attend to nothing
        out = merge_heads(self.attn_dropout(attn) @ v)  # (B, T, D)
        x = x + self.res_dropout(self.out_proj(out))
        x = x + self.ffn(self.norm_ffn(x))
        x = x * mask[..., None].to(x.dtype)
        maps = {"psa": attn} if vanilla is None else {"psa": attn, "vanilla": vanilla}
        return x, logits, maps

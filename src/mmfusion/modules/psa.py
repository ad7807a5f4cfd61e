"""Predictive Self-Attention (MEA spec §2): self-attention whose map is partly predicted from the previous layer's.

Layer l computes logits S_l = Q Kᵀ / sqrt(D_h) (B, H, T, T). From layer 2 on, the previous layer's logits, seen as
an H-channel image, predict this layer's map: P_l = GELU(Conv2d_{H->H, 3x3, same}(S_{l-1})). Mixing:

- ``"logits"`` (default): A_l = softmax(µ·P_l + (1-µ)·S_l); µ = 0 is plain attention.
- ``"literal"`` (Eq. 2 as printed): A_l = softmax(µ·P_l + (1-µ)·softmax(S_l)).

Both softmaxes run over real keys only. The logits handed to the next layer are zero outside the real
(query, key) block, so the 3x3 convolution sees the same zero border whatever the padding side or amount.

How it runs fast. A layer hands the next one the *factors* of its logits, S = Q' K'ᵀ with Q' = Q·q_mask/sqrt(D_h)
and K' = K·k_mask (B, H, T, D_h), never the T×T map. The 3×3 convolution of a product of factors is itself a
product of factors (:func:`predict_from_factors`): shifting rows of Q' and of K' is shifting rows and columns of S,
so Conv2d(S) = Q̃ K̃ᵀ + b with inner width 3·H·D_h = 3·D — one batched matmul instead of an 8-channel
convolution over a 500×500 image, and exactly the same numbers (tested against ``nn.Conv2d``). The mixed logits
µ·GELU(P) + (1-µ)·S (+ the key mask) are formed inside :func:`~mmfusion.modules.attention.attend`: row by row in the
compiled kernel, GELU included (one T×T map per layer, P before its GELU, is all that is stored), or with one
``baddbmm`` in the PyTorch fallback. A layer without prediction runs plain fused attention. The T×T attention maps
are built only for inspection.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.modules.attention import (
    MASKED_LOGIT,
    FeedForward,
    attend,
    attention,
    key_bias,
    masked_softmax,
    merge_heads,
    scores,
    split_heads,
)

Factors = tuple[Tensor, Tensor]
"""(Q', K'), each (B, H, T, D_h): the logits S = Q' K'ᵀ, zero outside the real (query, key) block."""


def logits_from_factors(factors: Factors) -> Tensor:
    """S = Q' K'ᵀ (B, H, T, T)."""
    q, k = factors
    return q @ k.transpose(-1, -2)


def predict_from_factors(conv: nn.Conv2d, factors: Factors) -> Tensor:
    """``conv(S)`` for S = Q' K'ᵀ (B, H, T, T) with a 3×3, stride-1, zero-padded ``conv`` (H -> H channels), without
    building S.

    conv(S)[o, i, j] = b_o + Σ_{h, y, x} W[o, h, y, x] S[h, i+y-1, j+x-1]
                     = b_o + Σ_{h, x, c} (Σ_y W[o, h, y, x] Q'[h, i+y-1, c]) · K'[h, j+x-1, c]
    with rows outside [0, T) zero (the convolution's zero padding). Returns P (B, H, T, T) before the GELU.
    """
    q, k = factors
    B, H, T, Dh = q.shape
    W, b = conv.weight, conv.bias  # (O, H, 3, 3), (O,)
    O = W.shape[0]
    qp, kp = F.pad(q, (0, 0, 1, 1)), F.pad(k, (0, 0, 1, 1))  # (B, H, T + 2, D_h)
    q_rows = torch.stack([qp[:, :, y:y + T] for y in range(3)], 2)  # (B, H, 3 [y], T, D_h): Q' shifted by y - 1
    k_rows = torch.stack([kp[:, :, x:x + T] for x in range(3)], 2)  # (B, H, 3 [x], T, D_h)
    left = torch.einsum("ohyx,bhyic->boihxc", W, q_rows).reshape(B, O, T, H * 3 * Dh)
    right = k_rows.permute(0, 3, 1, 2, 4).reshape(B, T, H * 3 * Dh)  # shared by every output channel
    if b is not None:  # the bias as one more inner coordinate: left gets b_o, right gets 1
        left = torch.cat([left, b.to(left.dtype)[None, :, None, None].expand(B, O, T, 1)], -1)
        right = torch.cat([right, right.new_ones(B, T, 1)], -1)
    return torch.bmm(left.reshape(B, O * T, -1), right.transpose(1, 2)).view(B, O, T, T)


def mixed_logits(pred: Tensor, factors: Factors, mu: float, key_mask: Tensor | None) -> Tensor:
    """µ·pred + (1-µ)·S, with padded keys (``key_mask`` False) pushed to :data:`MASKED_LOGIT`, in one ``baddbmm``.

    pred (B, H, T, T); factors (B, H, T, D_h); key_mask (B, T) or None when nothing is padded.
    """
    q, k = factors
    B, H, T, Dh = q.shape
    bias = None if key_mask is None else key_bias(key_mask, H, q.dtype)
    return scores((q * (1.0 - mu)).reshape(B * H, T, Dh), k.reshape(B * H, T, Dh), pred.reshape(B * H, T, T), mu,
                  bias).view(B, H, T, T)


class PredictiveSelfAttentionLayer(nn.Module):
    """One pre-LN PSA layer: residual (predictive) self-attention, then a residual FFN (width 4D, GELU).

    forward(x (B, T, D), mask (B, T), prev: the previous layer's logit factors or None, need_maps)
      -> (x (B, T, D) with zeros at padding, this layer's logit factors, maps). ``maps`` is empty unless
    ``need_maps``: then {"psa": A_l (B, H, T, T), "vanilla": softmax(S_l) (B, H, T, T)}, padded query rows zero.
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
        self.attn_dropout = attn_dropout
        self.res_dropout = nn.Dropout(res_dropout)
        self.ffn = FeedForward(dim, 4, res_dropout)

    def forward(self, x: Tensor, mask: Tensor, prev: Factors | None = None, need_maps: bool = False
                ) -> tuple[Tensor, Factors, dict[str, Tensor]]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(self.norm_attn(x)).chunk(3, -1))  # (B, H, T, D_h)
        real = mask[:, None, :, None].to(q.dtype)  # (B, 1, T, 1)
        factors = (q * (real / math.sqrt(q.shape[-1])), k * real)  # S_l = Q' K'ᵀ, zero off the real block
        key_mask = None if bool(mask.all()) else mask
        dropout = self.attn_dropout if self.training else 0.0
        maps: dict[str, Tensor] = {}
        vanilla = masked_softmax(logits_from_factors(factors), mask) if need_maps or self.mixing == "literal" \
            else None
        if self.predictor is not None and prev is not None and self.mu > 0:
            pre = predict_from_factors(self.predictor, prev)  # Conv2d(S_{l-1}) (B, H, T, T), before the GELU
            if self.mixing == "logits" and not need_maps and dropout == 0.0:
                # softmax(µ·GELU(pre) + (1-µ)·S_l) v in one fused step (GELU included where the kernel is built)
                out = attend(factors[0], factors[1], v, key_mask, scale=1.0 - self.mu, extra=pre, beta=self.mu,
                             extra_gelu=True)
            else:
                pred = F.gelu(pre)  # P_l
                if self.mixing == "logits":
                    mixed = mixed_logits(pred, factors, self.mu, key_mask)
                else:
                    mixed = self.mu * pred + (1.0 - self.mu) * vanilla
                    if key_mask is not None:
                        mixed = mixed.masked_fill(~key_mask[:, None, None, :], MASKED_LOGIT)
                attn = mixed.softmax(-1)  # A_l
                out = F.dropout(attn, dropout, training=dropout > 0) @ v
                if need_maps:
                    maps["psa"] = attn * real
        else:  # plain attention, no map
            out = attention(factors[0], k, v, key_mask, dropout=dropout, scale=1.0)[0]
            if need_maps:
                maps["psa"] = vanilla * real
        if need_maps:
            maps["vanilla"] = vanilla * real
        x = x + self.res_dropout(self.out_proj(merge_heads(out)))
        x = x + self.ffn(self.norm_ffn(x))
        return x * mask[..., None].to(x.dtype), factors, maps

"""Predictive Self-Attention (docs/design/mea.md §2): self-attention whose map is partly predicted from the previous
layer's.

Layer l computes logits S_l = Q Kᵀ / sqrt(D_h) (B, H, T, T). From layer 2 on, the previous layer's logits, seen as
an H-channel image, predict this layer's map: P_l = GELU(Conv2d_{H->H, 3x3, same}(S_{l-1})). Mixing:

- ``"logits"`` (default): A_l = softmax(µ·P_l + (1-µ)·S_l); µ = 0 is plain attention.
- ``"literal"`` (Eq. 2 as printed): A_l = softmax(µ·P_l + (1-µ)·softmax(S_l)).

Both softmaxes run over real keys only. The logits handed to the next layer are zero outside the real
(query, key) block, so the 3x3 convolution sees the same zero border whatever the padding side or amount.

How it runs. A layer hands the next one the *factors* of its logits, S = Q' K'ᵀ with Q' = Q·q_mask/sqrt(D_h)
and K' = K·k_mask (B, H, T, D_h), never the T×T map. The 3×3 convolution of a product of factors is itself a
product of factors (:func:`predict_from_factors`): shifting rows of Q' and of K' is shifting rows and columns of S,
so Conv2d(S) = Q̃ K̃ᵀ + b with inner width 3·H·D_h = 3·D — one batched matmul instead of an H-channel
convolution over a T×T image, and exactly the same numbers (tested against ``nn.Conv2d``). Short sequences
(T ≤ :data:`DIRECT_MAX_T`) are the exception: there building S and convolving it is cheaper.

The layer's ``attention`` setting (:mod:`mmfusion.modules.attention`) says how A_l v is computed. ``eager``
builds A_l as written above; the other implementations take the mixed logits µ·GELU(P) + (1-µ)·S (+ the key mask)
as an added logit map (:func:`~mmfusion.modules.attention.attend`): the compiled kernel forms them row by row,
GELU included, storing only P; SDPA takes them as its float mask. The literal mixing needs softmax(S_l) itself and
always runs ``eager``; so does a forward that returns the maps (they exist only for inspection).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from mmfusion.kernels.attention import MASKED_LOGIT, key_bias, scores
from mmfusion.modules.attention import (
    Attention,
    FeedForward,
    attend,
    attention,
    check_attention,
    choose,
    mask_or_none,
    masked_softmax,
    merge_heads,
    split_heads,
)
from mmfusion.modules.dropout import Dropout

Factors = tuple[Tensor, Tensor]
"""(Q', K'), each (B, H, T, D_h): the logits S = Q' K'ᵀ, zero outside the real (query, key) block."""


def logits_from_factors(factors: Factors) -> Tensor:
    """S = Q' K'ᵀ (B, H, T, T)."""
    q, k = factors
    return q @ k.transpose(-1, -2)


DIRECT_MAX_T = 64
"""Longest sequence for which :func:`predict_from_factors` convolves the materialised logit map."""


def predict_from_factors(conv: nn.Conv2d, factors: Factors) -> Tensor:
    """``conv(S)`` for S = Q' K'ᵀ (B, H, T, T) with a 3×3, stride-1, zero-padded ``conv`` (H -> O channels), beyond
    :data:`DIRECT_MAX_T` frames without building S:

    conv(S)[o, i, j] = b_o + Σ_{h, y, x} W[o, h, y, x] S[h, i+y-1, j+x-1]
                     = b_o + Σ_{h, c, x} (Σ_y W[o, h, y, x] Q'[h, i+y-1, c]) · K'[h, j+x-1, c]
    with rows outside [0, T) zero (the convolution's zero padding). Up to :data:`DIRECT_MAX_T` frames it is
    computed as written, ``conv(Q' K'ᵀ)``. Returns P (B, O, T, T) before the GELU.
    """
    q, k = factors
    weight, bias = conv.weight, conv.bias
    if torch.is_autocast_enabled(q.device.type):  # in float32, like the attention it feeds (mixed precision)
        with torch.autocast(q.device.type, enabled=False):
            q, k, weight = q.float(), k.float(), weight.float()
            bias = None if bias is None else bias.float()
            return _predict(q, k, weight, bias)
    return _predict(q, k, weight, bias)


def _predict(q: Tensor, k: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if q.shape[2] <= DIRECT_MAX_T:
        return F.conv2d(logits_from_factors((q, k)), weight, bias, padding=1)
    return _conv_of_product(q, k, weight, bias)


def _conv_of_product(q: Tensor, k: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    if torch.compiler.is_compiling():  # the same product in traceable operations (autograd derives its backward)
        return _traceable_conv_of_product(q, k, weight, bias)
    return _ConvOfProduct.apply(q, k, weight, bias)


def _traceable_conv_of_product(q: Tensor, k: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv(Q' K'ᵀ) as in :class:`_ConvOfProduct`, written with plain differentiable operations."""
    B, H, T, Dh = q.shape
    O = weight.shape[0]
    qs = _shifted_rows(q).view(B, H, Dh, 3, T)  # [b, h, c, y, i] = Q'[b, h, i + y - 1, c]
    left = torch.einsum("ohyx,bhcyi->bhcxoi", weight, qs).reshape(B, H * Dh * 3, O * T)
    p = torch.bmm(left.transpose(1, 2), _shifted_rows(k).view(B, H * Dh * 3, T)).view(B, O, T, T)
    return p if bias is None else p + bias[None, :, None, None]


class _ConvOfProduct(torch.autograd.Function):
    """conv(Q' K'ᵀ) for a 3×3, stride-1, zero-padded H -> O convolution, as one GEMM (see
    :func:`predict_from_factors`), with a hand-written backward so that no operand is ever permuted.

    Inner coordinates k = 1 + (h, c, x) (h head, c < D_h, x < 3 the column shift) and k = 0 for the bias:
    L (B, K, O·T): L[b, 1 + (h, c, x), (o, i)] = Σ_y W[o, h, y, x] Q'[b, h, i + y - 1, c],  L[b, 0, (o, i)] = b_o
    R (B, K, T):   R[b, 1 + (h, c, x), j]     = K'[b, h, j + x - 1, c],                   R[b, 0, j] = 1
    P = Lᵀ R (B, O·T, T). Both are stored K-major, so building L is one small batched product per sample written
    straight into place (contraction over the 3 row shifts y), and every GEMM reads its operands as they lie.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        B, H, T, Dh = q.shape
        O = weight.shape[0]
        wm = weight.permute(1, 3, 0, 2).reshape(H, 1, 3 * O, 3)  # wm[h, (x, o), y] = W[o, h, y, x]
        wm = wm.expand(H, Dh, 3 * O, 3).reshape(H * Dh, 3 * O, 3)  # one copy per (h, c)
        qs = _shifted_rows(q)  # (B, H·D_h, 3 [y], T)
        left = q.new_empty(B, 1 + H * Dh * 3, O * T)
        left[:, 0].view(B, O, T).copy_((bias if bias is not None else q.new_zeros(O))[None, :, None].expand(B, O, T))
        for b in range(B):  # L[b, 1:] as (H·D_h, 3·O, T) = wm @ qs[b]: contraction over y, written in place
            torch.bmm(wm, qs[b], out=left[b, 1:].view(H * Dh, 3 * O, T))
        right = torch.cat([k.new_ones(B, 1, T), _shifted_rows(k).view(B, H * Dh * 3, T)], 1)  # (B, K, T)
        ctx.save_for_backward(wm, qs, left, right)
        ctx.shape = (B, H, T, Dh, O)
        return torch.bmm(left.transpose(1, 2), right).view(B, O, T, T)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        wm, qs, left, right = ctx.saved_tensors
        B, H, T, Dh, O = ctx.shape
        grad = grad.reshape(B, O * T, T)
        need_q, need_k, need_w, need_b = ctx.needs_input_grad
        grad_q = grad_k = grad_w = grad_b = None
        if need_k:
            grad_k = _unshift_rows(torch.bmm(left, grad)[:, 1:].view(B, H * Dh, 3, T), H)
        if need_q or need_w or need_b:
            grad_left = torch.bmm(right, grad.transpose(1, 2))  # (B, K, O·T)
            if need_b:
                grad_b = grad_left[:, 0].view(B, O, T).sum((0, 2))
            g = grad_left[:, 1:].view(B, H * Dh, 3 * O, T)
            if need_w:
                gw = torch.zeros_like(wm)
                for b in range(B):
                    gw.baddbmm_(g[b], qs[b].transpose(1, 2))  # Σ_i dL · Q' shifted: (H·D_h, 3·O, 3)
                grad_w = gw.view(H, Dh, 3, O, 3).sum(1).permute(2, 0, 3, 1)  # -> (O, H, 3 [y], 3 [x])
            if need_q:
                gq = qs.new_empty(B, H * Dh, 3, T)
                wt = wm.transpose(1, 2)
                for b in range(B):
                    torch.bmm(wt, g[b], out=gq[b])
                grad_q = _unshift_rows(gq, H)
        return grad_q, grad_k, grad_w, grad_b


def _shifted_rows(x: Tensor) -> Tensor:
    """x (B, H, T, D_h) -> (B, H·D_h, 3, T): [b, (h, c), s, i] = x[b, h, i + s - 1, c], zero outside [0, T)."""
    B, H, T, Dh = x.shape
    xt = F.pad(x.transpose(2, 3), (1, 1))  # (B, H, D_h, T + 2)
    # three slices rather than unfold(-1, T, 1): unfold's size argument pins T inside torch.compile graphs
    return torch.stack([xt[..., s:s + T] for s in range(3)], 3).view(B, H * Dh, 3, T)


def _unshift_rows(g: Tensor, heads: int) -> Tensor:
    """The adjoint of :func:`_shifted_rows`: g (B, H·D_h, 3, T) -> (B, H, T, D_h)."""
    B, HD, _, T = g.shape
    acc = g.new_zeros(B, HD, T + 2)
    for s in range(3):
        acc[..., s:s + T] += g[:, :, s]
    return acc[..., 1:T + 1].view(B, heads, HD // heads, T).transpose(2, 3)


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
    ``attention`` is the model's attention setting (:mod:`mmfusion.modules.attention`).
    """

    def __init__(self, dim: int, num_heads: int, *, predict: bool, mu: float,
                 mixing: Literal["logits", "literal"] = "logits", attn_dropout: float = 0.0,
                 res_dropout: float = 0.0, attention: Attention = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        check_attention(attention, head_dim=dim // num_heads, dropout=attn_dropout)
        self.num_heads, self.mu, self.mixing, self.attention = num_heads, mu, mixing, attention
        self.norm_attn, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        # the prediction chain: previous logit maps (H channels) -> this layer's (H channels)
        self.predictor = nn.Conv2d(num_heads, num_heads, 3, padding=1) if predict else None
        self.attn_dropout = attn_dropout
        self.res_dropout = Dropout(res_dropout)
        self.ffn = FeedForward(dim, 4, res_dropout)

    def forward(self, x: Tensor, mask: Tensor, prev: Factors | None = None, need_maps: bool = False
                ) -> tuple[Tensor, Factors, dict[str, Tensor]]:
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(self.norm_attn(x)).chunk(3, -1))  # (B, H, T, D_h)
        real = mask[:, None, :, None].to(q.dtype)  # (B, 1, T, 1)
        factors = (q * (real / math.sqrt(q.shape[-1])), k * real)  # S_l = Q' K'ᵀ, zero off the real block
        dropout = self.attn_dropout if self.training else 0.0
        maps: dict[str, Tensor] = {}
        vanilla = masked_softmax(logits_from_factors(factors), mask) if need_maps or self.mixing == "literal" \
            else None  # softmax(S_l)
        if self.predictor is None or prev is None or self.mu <= 0:  # plain attention (maps from S_l alone)
            out = attention(factors[0], k, v, mask, impl=self.attention, dropout=dropout, scale=1.0)[0]
            if need_maps:
                maps["psa"] = vanilla * real
        else:
            pre = predict_from_factors(self.predictor, prev)  # Conv2d(S_{l-1}) (B, H, T, T), before the GELU
            how = choose(self.attention, q, dropout=dropout, need_map=need_maps or self.mixing == "literal",
                         plain=False)
            if how == "eager" and (need_maps or self.mixing == "literal" or dropout > 0):  # A_l, as written
                key_mask = mask_or_none(mask)
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
            else:  # softmax(µ·GELU(pre) + (1-µ)·S_l) v with the map never returned (GELU fused into the kernel)
                out = attend(factors[0], factors[1], v, mask, scale=1.0 - self.mu, extra=pre, beta=self.mu,
                             extra_gelu=True, impl=how, dropout=dropout)
        if need_maps:
            maps["vanilla"] = vanilla * real
        x = x + self.res_dropout(self.out_proj(merge_heads(out)))
        x = x + self.ffn(self.norm_ffn(x))
        return x * mask[..., None].to(x.dtype), factors, maps

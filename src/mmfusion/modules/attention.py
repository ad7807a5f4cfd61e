"""Masked multi-head attention, and the one setting that says how it runs: ``attention`` (auto, eager, sdpa, kernel).

A model takes the setting once, when it is built (``model_args.attention``, recorded with the model's other
arguments), and hands it to every attention module; :func:`choose` turns it into the implementation of each call:

- ``eager``: the equations in PyTorch operations, the (B, H, T, S) map built (:func:`eager_attention`). Where no map
  is returned or dropped out, the same products run as :func:`~mmfusion.kernels.attention.softmax_attention`, with
  a hand-written backward pass.
- ``sdpa``: PyTorch's ``scaled_dot_product_attention`` (:func:`~mmfusion.kernels.attention.sdpa_attention`).
- ``kernel``: the compiled CPU kernel (:func:`~mmfusion.kernels.attention.kernel_attention`): float32 on a CPU,
  heads of width <= 8, no map dropout. Asking for it where it is not built, or where it cannot serve the model, is
  a :class:`~mmfusion.errors.ConfigError` (:func:`check_attention`), never a silent fallback.
- ``auto`` (the default): the kernel wherever it can run; elsewhere, while training narrow heads on a CPU or for an
  added logit map (PSA's prediction), ``eager``'s map-free form; otherwise ``sdpa``.

A call that returns the attention map (``need_weights``: ``explain`` and the plots) runs ``eager`` whatever the
setting: only it builds the map. Every implementation reads the same masks (True = real key frame) and gives exact
zeros for a query row with no real key (a missing modality), where a plain softmax would give NaN.

Shape legend: B batch, H heads, T queries, S keys, D_h head width, D model width.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion import kernels
from mmfusion.errors import ConfigError
from mmfusion.kernels import attention as backends
from mmfusion.kernels.attention import KERNEL_MAX_HEAD_DIM, use_compiled_kernel
from mmfusion.kernels.attention import MASKED_LOGIT as MASKED_LOGIT  # (re-exported: the masks of WAL and DGF)
from mmfusion.modules.dropout import Dropout

Attention = Literal["auto", "eager", "sdpa", "kernel"]
"""The values of the ``attention`` setting (see the module docstring)."""

ATTENTION_SETTINGS: tuple[str, ...] = get_args(Attention)

Implementation = Literal["eager", "sdpa", "kernel"]
"""What one call runs: the setting with ``auto`` resolved."""


def check_attention(setting: str, *, head_dim: int, dropout: float = 0.0, source: str | None = None) -> None:
    """Refuse, when a model is built, a setting it cannot run with: an unknown value; ``kernel`` for heads wider
    than the kernel serves, with attention-map dropout, or where the kernel is not built (the reason named).
    Raises :class:`ConfigError` with key ``attention``."""
    if setting not in ATTENTION_SETTINGS:
        raise ConfigError("unknown attention implementation", source=source, key="attention",
                          expected=f"one of {list(ATTENTION_SETTINGS)}", actual=setting)
    if setting != "kernel":
        return
    if head_dim > KERNEL_MAX_HEAD_DIM:
        raise ConfigError(f"the compiled kernel serves heads of width <= {KERNEL_MAX_HEAD_DIM}; these are "
                          f"{head_dim} wide", source=source, key="attention", expected="auto, eager or sdpa",
                          actual=setting)
    if dropout > 0:
        raise ConfigError(f"the compiled kernel has no attention-map dropout (attn_dropout {dropout})",
                          source=source, key="attention", expected="auto, eager or sdpa, or attn_dropout 0",
                          actual=setting)
    if kernels.narrow_attention() is None:
        raise ConfigError(f"the compiled attention kernel is unavailable here ({kernels.unavailable_reason()})",
                          source=source, key="attention", expected="auto, eager or sdpa", actual=setting)


def choose(setting: str, q: Tensor, *, dropout: float = 0.0, need_map: bool = False, training: bool = False,
           plain: bool = True) -> Implementation:
    """How one call with queries ``q`` (B, H, T, D_h) runs under ``setting``: the one place that decides.

    ``need_map``: the caller builds or returns the map (always ``eager``). ``training``: autograd records the call.
    ``plain``: no logit map is added (``auto`` may then pick SDPA). ``kernel`` where the kernel cannot serve this
    call (another device or dtype) is a :class:`ConfigError`. ``auto`` picks what mmfusion has always run: the
    kernel where it runs and there is no map dropout; else ``eager`` for an added logit map or while training
    heads of width <= 8 on a CPU without dropout (its backward pass beats SDPA's there); else ``sdpa``.
    """
    if setting not in ATTENTION_SETTINGS:
        raise ConfigError("unknown attention implementation", key="attention",
                          expected=f"one of {list(ATTENTION_SETTINGS)}", actual=setting)
    if need_map:
        return "eager"
    if setting == "kernel":
        if dropout > 0 or not use_compiled_kernel(q):
            why = f"attention-map dropout {dropout}" if dropout > 0 else \
                f"{q.dtype} heads of width {q.shape[-1]} on {q.device.type}"
            raise ConfigError(f"the compiled kernel serves float32 heads of width <= {KERNEL_MAX_HEAD_DIM} on a CPU "
                              f"without map dropout; this call has {why}", key="attention",
                              expected="auto, eager or sdpa", actual=setting)
        return "kernel"
    if setting != "auto":
        return setting  # type: ignore[return-value]
    if dropout == 0.0 and use_compiled_kernel(q):
        return "kernel"
    if not plain or (dropout == 0.0 and training and q.device.type == "cpu" and q.shape[-1] <= KERNEL_MAX_HEAD_DIM):
        return "eager"
    return "sdpa"


def masked_softmax(logits: Tensor, key_mask: Tensor | None) -> Tensor:
    """Softmax over the last axis ignoring masked keys; all-masked rows give zeros.

    logits (B, H, T, S); key_mask (B, S) bool.
    """
    if key_mask is None:
        return logits.softmax(-1)
    keep = key_mask[:, None, None, :]  # (B, 1, 1, S)
    attn = logits.masked_fill(~keep, float("-inf")).softmax(-1)
    return attn.masked_fill(~keep.any(-1, keepdim=True), 0.0)  # zero the rows that had no key at all


def eager_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, *, scale: float,
                    extra: Tensor | None = None, beta: float = 1.0, extra_gelu: bool = False,
                    dropout: float = 0.0) -> tuple[Tensor, Tensor]:
    """A = softmax(scale·q kᵀ + β·act(extra)) over real keys, out = dropout(A) v, written out; returns (out, A).

    q (B, H, T, D_h), k/v (B, H, S, D_h), key_mask (B, S) or None, extra (B, H, T, S) or None -> out
    (B, H, T, D_h), A (B, H, T, S); act is the exact GELU with ``extra_gelu``, else the identity.
    """
    logits = (q * scale) @ k.transpose(-1, -2)  # (B, H, T, S)
    if extra is not None:
        logits = logits + beta * (F.gelu(extra) if extra_gelu else extra)
    attn = masked_softmax(logits, key_mask)
    return F.dropout(attn, dropout, training=dropout > 0) @ v, attn


def mask_or_none(key_mask: Tensor | None) -> Tensor | None:
    """``key_mask``, or None where every key is real (the mask work is skipped)."""
    return None if key_mask is None or bool(key_mask.all()) else key_mask


def _records_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None, *, scale: float = 1.0,
           extra: Tensor | None = None, beta: float = 1.0, extra_gelu: bool = False, impl: Attention = "auto",
           dropout: float = 0.0) -> Tensor:
    """softmax(scale·q kᵀ + β·act(extra), over real keys) v without returning the map, in float32 under autocast.

    q (B, H, T, D_h), k/v (B, H, S, D_h), key_mask (B, S) bool or None, extra (B, H, T, S) or None
    -> (B, H, T, D_h); act is the exact GELU with ``extra_gelu`` (fused into the compiled kernel), else the
    identity. Rows with no real key give zeros. ``impl`` is the ``attention`` setting (:func:`choose`, as for an
    added logit map: ``auto`` is the kernel where it runs, else ``eager``).
    """
    if torch.is_autocast_enabled(q.device.type):  # the kernels expect one dtype throughout
        with torch.autocast(q.device.type, enabled=False):
            return attend(q.float(), k.float(), v.float(), key_mask, scale=scale,
                          extra=None if extra is None else extra.float(), beta=beta, extra_gelu=extra_gelu,
                          impl=impl, dropout=dropout)
    how = choose(impl, q, dropout=dropout, plain=False)
    if how == "kernel":  # (the kernel reads the mask as it is)
        return backends.kernel_attention(q, k, v, key_mask, scale=scale, extra=extra, beta=beta,
                                         extra_gelu=extra_gelu)
    key_mask = mask_or_none(key_mask)
    if how == "sdpa":
        return backends.sdpa_attention(q, k, v, key_mask, scale=scale, extra=extra, beta=beta,
                                       extra_gelu=extra_gelu, dropout=dropout)
    if dropout > 0:
        return eager_attention(q, k, v, key_mask, scale=scale, extra=extra, beta=beta, extra_gelu=extra_gelu,
                               dropout=dropout)[0]
    return backends.softmax_attention(q, k, v, key_mask, scale=scale, extra=extra, beta=beta, extra_gelu=extra_gelu)


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None, *, impl: Attention = "auto",
              dropout: float = 0.0, need_weights: bool = False, scale: float | None = None
              ) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention. q (B, H, T, D_h), k/v (B, H, S, D_h), key_mask (B, S) -> (B, H, T, D_h).

    ``scale`` multiplies the logits (default 1/sqrt(D_h)); ``impl`` is the ``attention`` setting (:func:`choose`).
    With ``need_weights`` the eager path runs and also returns the map (B, H, T, S).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    how = choose(impl, q, dropout=dropout, need_map=need_weights, training=_records_grad(q, k, v))
    if how == "kernel" or (how == "eager" and dropout == 0.0 and not need_weights):
        return attend(q, k, v, key_mask, scale=scale, impl=how), None
    key_mask = mask_or_none(key_mask)
    if how == "eager":
        out, attn = eager_attention(q, k, v, key_mask, scale=scale, dropout=dropout)
        return out, attn if need_weights else None
    return backends.sdpa_attention(q, k, v, key_mask, scale=scale, dropout=dropout), None


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, T, D) -> (B, H, T, D/H)."""
    B, T, D = x.shape
    return x.view(B, T, heads, D // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, D_h) -> (B, T, H·D_h)."""
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * Dh)


class MultiHeadAttention(nn.Module):
    """Multi-head (cross-)attention with key-padding masks. Queries (B, T, D), keys/values (B, S, D).

    ``attention`` is the model's setting (module docstring), checked here (:func:`check_attention`).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, attention: Attention = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        check_attention(attention, head_dim=dim // num_heads, dropout=dropout)
        self.num_heads, self.dropout, self.attention = num_heads, dropout, attention
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, source: Tensor, source_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, T, D_h)
        k = split_heads(self.k_proj(source), self.num_heads)  # (B, H, S, D_h)
        v = split_heads(self.v_proj(source), self.num_heads)
        out, attn = attention(q, k, v, source_mask, impl=self.attention,
                              dropout=self.dropout if self.training else 0.0, need_weights=need_weights)
        return self.out_proj(merge_heads(out)), attn


class FeedForward(nn.Sequential):
    """Position-wise FFN: Linear(D, 4D) -> GELU -> Linear(4D, D), dropout on its (B, T, D) output.

    (No dropout on the 4D-wide hidden layer: on a CPU, drawing its random mask costs more than the FFN itself.)
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim), Dropout(dropout))

"""The fast ways attention runs: map-free functions that compute softmax(scale·q kᵀ + β·act(extra) + key mask) v.

:mod:`mmfusion.modules.attention` chooses between them (its ``attention`` setting: ``auto``, ``eager``, ``sdpa``,
``kernel``) and holds the equations themselves; this module holds only the implementations:

- :func:`kernel_attention`: the compiled kernel (:func:`mmfusion.kernels.narrow_attention`), float32 on a CPU with
  heads of width <= :data:`KERNEL_MAX_HEAD_DIM`. It never stores a T×S map: it keeps one row of logits and
  recomputes rows in the backward pass (FlashAttention-2's scheme), loops over keys with the head width unrolled,
  reads split-head views of the projections in place (the scale and the key mask are applied inside) and returns
  heads that merge without a copy. Registered as a PyTorch operator (:func:`narrow_attention_op`) so that autograd,
  ``torch.compile`` and ``torch.jit.trace`` see it.
- :func:`softmax_attention` (the ``eager`` setting's map-free form): :class:`SoftmaxAttention`, which materialises
  the map once, keeps it for its hand-written backward pass, and multiplies with the narrow operand on the *left*
  (``(vᵀ Aᵀ)ᵀ``; a GEMM with a right operand a few columns wide runs far below the machine's peak).
- :func:`sdpa_attention`: PyTorch's ``scaled_dot_product_attention``; an added logit map goes in as its float mask.

All three share the mask semantics (True = real key frame) and give exact zeros for a query row with no real key
(a missing modality), where a plain softmax would give NaN.

Shape legend: B batch, H heads, T queries, S keys, D_h head width.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfusion import kernels

MASKED_LOGIT = -1e4
"""Logit given to padded keys: exp() of it is exactly 0 in float32/bfloat16/float16, and it stays finite in float16."""

KERNEL_MAX_HEAD_DIM = 8
"""Widest head the compiled kernel serves (MEA and MulT use 5- and 6-dimensional heads)."""


def _left_skinny(a: Tensor, b: Tensor) -> Tensor:
    """a (N, T, S) @ b (N, S, D_h) computed as (bᵀ aᵀ)ᵀ (the narrow operand on the left; same numbers)."""
    return torch.bmm(b.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2)


SAVED_MAP_LIMIT = 512 * 2**20
"""Largest map (bytes) :class:`SoftmaxAttention` keeps for its backward pass; a larger one is recomputed there (one
more product and softmax), to bound memory at large batches."""


def key_bias(key_mask: Tensor, heads: int, dtype: torch.dtype) -> Tensor:
    """Additive logit per key for flattened heads: key_mask (B, S) -> (B·H, S), 0 real, :data:`MASKED_LOGIT` padded."""
    B, S = key_mask.shape
    bias = torch.zeros(B, S, dtype=dtype, device=key_mask.device).masked_fill(~key_mask, MASKED_LOGIT)
    return bias[:, None].expand(B, heads, S).reshape(B * heads, S)


def scores(q: Tensor, k: Tensor, extra: Tensor | None = None, beta: float = 1.0,
           bias: Tensor | None = None) -> Tensor:
    """q kᵀ + β·extra + bias (per key) over flattened heads, in one (b)addbmm.

    q (N, T, D_h), k (N, S, D_h), extra (N, T, S) or None, bias (N, S) or None (:func:`key_bias`) -> (N, T, S).
    """
    if bias is not None:  # the key bias as one more inner coordinate: 1 for every query, bias per key
        q = torch.cat([q, q.new_ones(*q.shape[:-1], 1)], -1)
        k = torch.cat([k, bias.to(k.dtype)[..., None]], -1)
    if extra is None:
        return torch.bmm(q, k.transpose(1, 2))
    return torch.baddbmm(extra, q, k.transpose(1, 2), beta=beta)


class SoftmaxAttention(torch.autograd.Function):
    """out = softmax(q kᵀ + β·extra + key bias) v over flattened heads, with a hand-written backward.

    q (N, T, D_h) already scaled, k/v (N, S, D_h), extra (N, T, S) or None (a map added to the logits, e.g. PSA's
    prediction), bias (N, S) or None (:func:`key_bias`). Keeps the map A for the backward pass (up to
    :data:`SAVED_MAP_LIMIT`, else recomputes it); every product with a D_h-wide operand keeps that operand on the
    left.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, extra: Tensor | None, beta: float,
                bias: Tensor | None) -> Tensor:
        attn = scores(q, k, extra, beta, bias).softmax(-1)
        ctx.beta, ctx.has_extra = beta, extra is not None
        ctx.saved_map = extra is not None or attn.numel() * attn.element_size() <= SAVED_MAP_LIMIT
        if ctx.saved_map:
            ctx.save_for_backward(q, k, v, attn)
        else:
            ctx.save_for_backward(q, k, v, bias)
        return _left_skinny(attn, v)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.saved_map:
            q, k, v, attn = ctx.saved_tensors
        else:
            q, k, v, bias = ctx.saved_tensors
            attn = scores(q, k, bias=bias).softmax(-1)
        grad_out = grad_out.contiguous()
        grad_v = torch.bmm(grad_out.transpose(1, 2), attn).transpose(1, 2)  # Aᵀ g
        grad_attn = torch.bmm(grad_out, v.transpose(1, 2))
        grad_logits = torch._softmax_backward_data(grad_attn, attn, -1, attn.dtype)
        del grad_attn, attn
        grad_q = _left_skinny(grad_logits, k)
        grad_k = torch.bmm(q.transpose(1, 2), grad_logits).transpose(1, 2)  # (g_Zᵀ q) with q on the left
        grad_extra = None
        if ctx.has_extra and ctx.needs_input_grad[3]:
            grad_extra = grad_logits.mul_(ctx.beta) if ctx.beta != 1.0 else grad_logits
        return grad_q, grad_k, grad_v, grad_extra, None, None


def _kernel_operands(heads: tuple[Tensor, ...], extra: Tensor | None, key_mask: Tensor | None
                     ) -> tuple[list[Tensor], Tensor | None, Tensor | None]:
    """The layout the kernel reads: (B, H, rows, D_h) operands with a contiguous last axis (any other strides),
    the logit map and the key mask contiguous."""
    return ([t if t.stride(-1) == 1 else t.contiguous() for t in heads],
            None if extra is None else extra.contiguous(), None if key_mask is None else key_mask.contiguous())


@torch.library.custom_op("mmfusion::narrow_attention", mutates_args=())
def narrow_attention_op(q: Tensor, k: Tensor, v: Tensor, extra: Tensor | None, beta: float, scale: float,
                        key_mask: Tensor | None, gelu: bool) -> tuple[Tensor, Tensor]:
    """out = softmax(scale·q kᵀ + β·act(extra) + key bias) v in the compiled kernel, as a differentiable PyTorch
    operator (``torch.ops.mmfusion.narrow_attention``: a ``torch.compile``d model keeps it inside its graph); act is
    the identity or the exact GELU; a sample with no real key gives zeros.

    q (B, H, T, D_h), k/v (B, H, S, D_h): float32 with any strides but a contiguous last axis (split-head views are
    read in place), D_h <= 8; extra (B, H, T, S) or None; key_mask (B, S) bool or None. Returns (out (B, H, T, D_h)
    as a view of (B, T, H, D_h) storage, so merging heads is free; log-sum-exp (B, H, T)). The backward pass
    saves only the inputs, the output and the log-sum-exp.
    """
    return _kernel_forward(q, k, v, extra, beta, scale, key_mask, gelu)


def _kernel_forward(q: Tensor, k: Tensor, v: Tensor, extra: Tensor | None, beta: float, scale: float,
                    key_mask: Tensor | None, gelu: bool) -> tuple[Tensor, Tensor]:
    """The compiled kernel's forward on the operands as :func:`narrow_attention_op` takes them."""
    (q, k, v), extra, key_mask = _kernel_operands((q, k, v), extra, key_mask)
    return kernels.narrow_attention().forward(q, k, v, extra, beta, scale, key_mask, gelu)


@narrow_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, extra: Tensor | None, beta: float, scale: float, key_mask: Tensor | None,
      gelu: bool) -> tuple[Tensor, Tensor]:
    B, H, T, Dh = q.shape
    return q.new_empty(B, T, H, Dh).transpose(1, 2), q.new_empty(B, H, T)


@torch.library.custom_op("mmfusion::narrow_attention_backward", mutates_args=())
def narrow_attention_backward_op(q: Tensor, k: Tensor, v: Tensor, extra: Tensor | None, beta: float, scale: float,
                                 key_mask: Tensor | None, gelu: bool, out: Tensor, lse: Tensor, grad_out: Tensor
                                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients (q, k, v, extra) of :func:`narrow_attention_op`; the last is empty when ``extra`` is None."""
    (q, k, v, out, grad_out), extra, key_mask = _kernel_operands((q, k, v, out, grad_out), extra, key_mask)
    dq, dk, dv, dextra = kernels.narrow_attention().backward(q, k, v, extra, beta, scale, key_mask, gelu, out,
                                                            lse.contiguous(), grad_out)
    return dq, dk, dv, q.new_empty(0) if extra is None else dextra


@narrow_attention_backward_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, extra: Tensor | None, beta: float, scale: float, key_mask: Tensor | None,
      gelu: bool, out: Tensor, lse: Tensor, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    def heads_last(x: Tensor) -> Tensor:
        B, H, T, Dh = x.shape
        return x.new_empty(B, T, H, Dh).transpose(1, 2)

    return heads_last(q), heads_last(k), heads_last(v), q.new_empty(0) if extra is None else torch.empty_like(extra)


def _narrow_attention_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, extra, beta, scale, key_mask, gelu = inputs
    ctx.save_for_backward(q, k, v, extra, key_mask, *output)
    ctx.beta, ctx.scale, ctx.gelu = beta, scale, gelu


def _narrow_attention_grad(ctx: Any, grad_out: Tensor, grad_lse: Tensor | None) -> tuple[Tensor | None, ...]:
    q, k, v, extra, key_mask, out, lse = ctx.saved_tensors
    dq, dk, dv, dextra = narrow_attention_backward_op(q, k, v, extra, ctx.beta, ctx.scale, key_mask, ctx.gelu,
                                                      out, lse, grad_out)
    return dq, dk, dv, None if extra is None else dextra, None, None, None, None


narrow_attention_op.register_autograd(_narrow_attention_grad, setup_context=_narrow_attention_setup)


def use_compiled_kernel(q: Tensor) -> bool:
    """True where :func:`kernel_attention` can run for queries like ``q`` (B, H, T, D_h): float32 (or autocast)
    on a CPU, D_h <= :data:`KERNEL_MAX_HEAD_DIM`, and the kernel built (:func:`mmfusion.kernels.narrow_attention`)."""
    return (q.device.type == "cpu" and q.shape[-1] <= KERNEL_MAX_HEAD_DIM
            and (q.dtype == torch.float32 or torch.is_autocast_enabled("cpu"))
            and kernels.narrow_attention() is not None)


def _needs_operator(*tensors: Tensor | None) -> bool:
    """True where the kernel must run as :func:`narrow_attention_op`: inside ``torch.compile`` or a
    ``torch.jit.trace`` (the graph must hold the operator; a direct call would be recorded as a constant) or when
    autograd records the call (its backward is registered on the operator)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def kernel_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, *, scale: float,
                     extra: Tensor | None = None, beta: float = 1.0, extra_gelu: bool = False) -> Tensor:
    """softmax(scale·q kᵀ + β·act(extra), over real keys) v in the compiled kernel (act: the exact GELU with
    ``extra_gelu``, fused into the kernel, else the identity); float32 operands on a CPU, see
    :func:`use_compiled_kernel`.

    q (B, H, T, D_h), k/v (B, H, S, D_h), key_mask (B, S) bool or None, extra (B, H, T, S) or None
    -> (B, H, T, D_h). Runs as :func:`narrow_attention_op` while autograd records or ``torch.compile`` /
    ``torch.jit.trace`` traces (see :func:`_needs_operator`), called directly otherwise (inference skips the
    operator's dispatch, which costs more than a small attention itself).
    """
    if _needs_operator(q, k, v, extra):
        return narrow_attention_op(q, k, v, extra, beta, scale, key_mask, extra_gelu)[0]
    return _kernel_forward(q, k, v, extra, beta, scale, key_mask, extra_gelu)[0]


def _zero_empty_rows(out: Tensor, key_mask: Tensor | None) -> Tensor:
    """``out`` (B, H, T, D_h) with the samples that have no real key set to exactly zero."""
    if key_mask is None:
        return out
    return out * key_mask.any(-1)[:, None, None, None].to(out.dtype)


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, *, scale: float,
                      extra: Tensor | None = None, beta: float = 1.0, extra_gelu: bool = False) -> Tensor:
    """The same as :func:`kernel_attention` through :class:`SoftmaxAttention` (any device and dtype)."""
    B, H, T, Dh = q.shape
    S = k.shape[2]
    if extra is not None and extra_gelu:
        extra = F.gelu(extra)
    out = SoftmaxAttention.apply((q * scale).reshape(B * H, T, Dh), k.reshape(B * H, S, Dh),
                                 v.reshape(B * H, S, Dh), None if extra is None else extra.reshape(B * H, T, S),
                                 beta, None if key_mask is None else key_bias(key_mask, H, q.dtype))
    return _zero_empty_rows(out.view(B, H, T, Dh), key_mask)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, *, scale: float,
                   extra: Tensor | None = None, beta: float = 1.0, extra_gelu: bool = False,
                   dropout: float = 0.0) -> Tensor:
    """The same as :func:`kernel_attention` through ``torch.nn.functional.scaled_dot_product_attention`` (any
    device and dtype; ``dropout`` on the map). An added logit map β·act(extra) is SDPA's float mask, with padded
    keys at :data:`MASKED_LOGIT`; without one the key mask is SDPA's boolean mask."""
    if extra is None:
        if key_mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale)
        mask = key_mask[:, None, None, :]
    else:
        mask = beta * (F.gelu(extra) if extra_gelu else extra)
        if key_mask is not None:
            mask = mask.masked_fill(~key_mask[:, None, None, :], MASKED_LOGIT)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    # rows with no real key: SDPA's result there is backend-dependent; make it exactly zero
    return _zero_empty_rows(out, key_mask)

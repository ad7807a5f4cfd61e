import pytest
import torch

from mmfusion.kernels import attention as backends
from mmfusion.modules.attention import attend, attention, masked_softmax


def _qkv(dtype=torch.float32, d=4):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(3, 2, s, d, generator=g, dtype=dtype) for s in (5, 7, 7))


MASK = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [False] * 7])


@pytest.mark.parametrize("d", [4, 16])  # the hand-written kernel (narrow heads on a CPU) and SDPA
def test_eager_and_fused_agree_including_empty_rows(d):
    q, k, v = _qkv(d=d)
    eager, attn = attention(q, k, v, MASK, need_weights=True)
    fast, _ = attention(q, k, v, MASK)
    torch.testing.assert_close(eager, fast, atol=1e-5, rtol=1e-5)
    assert attn is not None and (attn[1, :, :, 3:] == 0).all()
    assert (eager[2] == 0).all() and (fast[2] == 0).all() and torch.isfinite(eager).all()
    torch.testing.assert_close(attn[:2].sum(-1), torch.ones(2, 2, 5))


def _reference(q, k, v, mask, scale, extra, beta):
    logits = scale * q @ k.transpose(-1, -2) + (0 if extra is None else beta * extra)
    return masked_softmax(logits, mask) @ v


@pytest.mark.parametrize("with_extra", [False, True])
@pytest.mark.parametrize("mask", [None, MASK[:2]])
def test_fused_attention_gradients_match_autograd(with_extra, mask):
    """The hand-written backward of SoftmaxAttention against autograd through the eager formula (float64)."""
    q, k, v = (t[:2].requires_grad_() for t in _qkv(torch.float64))
    extra = torch.randn(2, 2, 5, 7, dtype=torch.float64, requires_grad=True) if with_extra else None
    inputs = [q, k, v] + ([extra] if with_extra else [])
    out = attend(q, k, v, mask, scale=0.7, extra=extra, beta=0.3)
    want = _reference(q, k, v, mask, 0.7, extra, 0.3)
    torch.testing.assert_close(out, want)
    g = torch.randn_like(out)
    got_grads = torch.autograd.grad(out, inputs, g)
    want_grads = torch.autograd.grad(want, inputs, g)
    for got, exp in zip(got_grads, want_grads):
        torch.testing.assert_close(got, exp)
    assert torch.autograd.gradcheck(lambda *xs: attend(*xs[:3], mask, scale=0.7, extra=xs[3] if with_extra else None,
                                                       beta=0.3), inputs)


def test_fused_attention_recomputes_large_maps_with_the_same_gradients(monkeypatch):
    q, k, v = (t.requires_grad_() for t in _qkv(torch.float64))
    grads = []
    for limit in (2**30, 0):  # keep the map / recompute it in the backward pass
        monkeypatch.setattr(backends, "SAVED_MAP_LIMIT", limit)
        out = attend(q, k, v, MASK, scale=0.5)
        grads.append(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_fused_attention_under_autocast_runs_in_float32():
    q, k, v = _qkv()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q, k, v, MASK, scale=0.5)
    torch.testing.assert_close(out, _reference(q, k, v, MASK, 0.5, None, 1.0) * MASK.any(-1)[:, None, None, None])
    assert out.dtype == torch.float32


def test_masked_softmax_ignores_masked_logits():
    logits = torch.tensor([[[[1.0, 2.0, 100.0]]]])
    out = masked_softmax(logits, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([*torch.softmax(torch.tensor([1.0, 2.0]), 0), 0.0]))

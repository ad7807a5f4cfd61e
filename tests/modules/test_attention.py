import pytest
import torch

from mmfusion.errors import ConfigError
from mmfusion.kernels import attention as backends
from mmfusion.modules import attention as attention_module
from mmfusion.modules.attention import MultiHeadAttention, attend, attention, choose, masked_softmax


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


# --- the attention setting (auto | eager | sdpa | kernel) ---------------------------------------------------------

def _counting(monkeypatch, calls):
    """Record which implementation each call runs (the kernel has its own test in test_kernels.py)."""
    for name in ("softmax_attention", "sdpa_attention", "kernel_attention"):
        real = getattr(backends, name)
        monkeypatch.setattr(backends, name, lambda *a, _n=name, _r=real, **kw: calls.append(_n) or _r(*a, **kw))
    real_eager = attention_module.eager_attention
    monkeypatch.setattr(attention_module, "eager_attention",
                        lambda *a, **kw: calls.append("eager_attention") or real_eager(*a, **kw))


def _mha_run(setting, x, src, mask, train):
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2, attention=setting)
    x, src = x.clone().requires_grad_(train), src.clone().requires_grad_(train)
    out, _ = mha(x, src, mask)
    grads = torch.autograd.grad(out, (x, src), torch.ones_like(out)) if train else ()
    return out, grads


@pytest.mark.parametrize("train", [False, True])
def test_eager_and_sdpa_settings_agree_with_padding(monkeypatch, train):
    """The same module weights under attention=eager and =sdpa: the same outputs and gradients, with padded keys and
    a sample without any real key (zeros), and each setting runs its own implementation."""
    monkeypatch.setenv("MMFUSION_KERNELS", "0")
    g = torch.Generator().manual_seed(0)
    x, src = torch.randn(3, 5, 8, generator=g), torch.randn(3, 7, 8, generator=g)
    results = {}
    for setting, ran in (("eager", "softmax_attention"), ("sdpa", "sdpa_attention")):
        calls = []
        _counting(monkeypatch, calls)
        results[setting] = _mha_run(setting, x, src, MASK, train)
        assert calls == [ran], (setting, calls)
        monkeypatch.undo()
        monkeypatch.setenv("MMFUSION_KERNELS", "0")
    (out_e, grads_e), (out_s, grads_s) = results["eager"], results["sdpa"]
    torch.testing.assert_close(out_e, out_s, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_e, grads_s):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_map_is_always_eager_and_eager_drops_out_on_the_map(monkeypatch):
    monkeypatch.setenv("MMFUSION_KERNELS", "0")
    q, k, v = _qkv()
    calls = []
    _counting(monkeypatch, calls)
    out, attn = attention(q, k, v, MASK, impl="sdpa", need_weights=True)
    assert calls == ["eager_attention"] and attn is not None and attn.shape == (3, 2, 5, 7)
    calls.clear()
    out, attn = attention(q, k, v, MASK, impl="eager", dropout=0.5)
    assert calls == ["eager_attention"] and attn is None
    dropped = out[:2] - attention(q, k, v, MASK, impl="eager")[0][:2]
    assert dropped.abs().max() > 1e-3  # the map was dropped out (and rescaled)


def test_auto_chooses_what_ran_before(monkeypatch):
    """Without the kernel: eager's map-free form while training narrow heads on a CPU or for an added logit map,
    else SDPA; a returned map is always eager."""
    monkeypatch.setenv("MMFUSION_KERNELS", "0")
    narrow, wide = torch.zeros(1, 2, 3, 5), torch.zeros(1, 2, 3, 16)
    assert choose("auto", narrow, training=True) == "eager"
    assert choose("auto", narrow, training=False) == "sdpa"
    assert choose("auto", narrow, training=True, dropout=0.1) == "sdpa"
    assert choose("auto", wide, training=True) == "sdpa"
    assert choose("auto", wide, plain=False) == "eager"
    assert choose("auto", narrow, need_map=True) == "eager"
    for setting in ("eager", "sdpa"):
        assert choose(setting, narrow, training=True) == setting
        assert choose(setting, narrow, need_map=True) == "eager"


def test_an_unknown_setting_is_one_config_error():
    with pytest.raises(ConfigError, match=r"key 'attention'.*expected one of \['auto', 'eager', 'sdpa', 'kernel'\], "
                                          r"got 'flash'"):
        MultiHeadAttention(8, 2, attention="flash")
    with pytest.raises(ConfigError, match="'attention'.*'flash'"):
        attention(*_qkv(), impl="flash")


def test_kernel_setting_where_the_kernel_cannot_serve_is_an_error(monkeypatch):
    """Never a silent fallback: not built (the reason named), heads too wide, map dropout, another dtype."""
    monkeypatch.setenv("MMFUSION_KERNELS", "0")
    with pytest.raises(ConfigError, match="kernel is unavailable here.*MMFUSION_KERNELS.*got 'kernel'"):
        MultiHeadAttention(8, 2, attention="kernel")
    with pytest.raises(ConfigError, match="heads of width <= 8; these are 16 wide"):
        MultiHeadAttention(32, 2, attention="kernel")
    with pytest.raises(ConfigError, match="no attention-map dropout"):
        MultiHeadAttention(8, 2, dropout=0.1, attention="kernel")
    with pytest.raises(ConfigError, match="torch.float64 heads of width 4 on cpu"):
        choose("kernel", torch.zeros(1, 1, 2, 4, dtype=torch.float64))
    MultiHeadAttention(8, 2, attention="auto")(torch.randn(1, 3, 8), torch.randn(1, 4, 8))  # auto falls back

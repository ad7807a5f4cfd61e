"""The compiled narrow-head attention kernel against float64 autograd, and against the PyTorch fallback."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmfusion import kernels
from mmfusion.kernels import attention as backends
from mmfusion.kernels.attention import key_bias, narrow_attention_op, use_compiled_kernel
from mmfusion.modules.attention import attend, attention


def _reference(q, k, v, extra, beta, scale, mask, gelu):
    logits = scale * q @ k.transpose(-1, -2) + key_bias(mask, 1, q.dtype).view(mask.shape)[:, None, None, :]
    if extra is not None:
        logits = logits + beta * (F.gelu(extra) if gelu else extra)
    return logits.softmax(-1) @ v * mask.any(-1)[:, None, None, None]


def _split_heads_view(x):
    """(B, H, n, d) values as the kernel usually sees them: a split-head view of (B, n, 3·H·d) projections."""
    B, H, n, d = x.shape
    storage = torch.randn(B, n, 3, H, d)
    storage[:, :, 1] = x.transpose(1, 2)
    return storage[:, :, 1].transpose(1, 2)


@pytest.mark.parametrize("d", [1, 5, 8])
@pytest.mark.parametrize("extra_kind", [None, "identity", "gelu"])
def test_kernel_matches_float64_autograd(ext, d, extra_kind):
    """Outputs and all four gradients, with padded keys, a sample without any real key, strided (split-head)
    inputs, a query scale and S off the vector width (21 keys); through the registered operator and its
    registered backward."""
    g = torch.Generator().manual_seed(d)
    B, H, T, S = 3, 2, 11, 21
    q, k, v = (torch.randn(B, H, n, d, generator=g) for n in (T, S, S))
    mask = torch.rand(B, S, generator=g) > 0.3
    mask[0, :] = False  # a sample whose every key is padding: zeros out, zero gradients
    extra = 2 * torch.randn(B, H, T, S, generator=g) if extra_kind else None
    inputs = [t.double().requires_grad_() for t in (q, k, v)] + ([extra.double().requires_grad_()] if extra_kind
                                                                 else [])
    want = _reference(*inputs[:3], inputs[3] if extra_kind else None, 0.6, 0.7, mask, extra_kind == "gelu")
    grad = torch.randn(B, H, T, d, generator=g)
    want_grads = torch.autograd.grad(want, inputs, grad.double())

    got_inputs = [_split_heads_view(t.detach().float()).requires_grad_() for t in inputs[:3]]
    got_inputs += [inputs[3].detach().float().requires_grad_()] if extra_kind else []
    assert not got_inputs[0].is_contiguous()
    got = narrow_attention_op(*got_inputs[:3], got_inputs[3] if extra_kind else None, 0.6, 0.7, mask,
                              extra_kind == "gelu")[0]
    assert got.transpose(1, 2).is_contiguous()  # (B, T, H, d) storage: merging heads is a view
    got_grads = torch.autograd.grad(got, got_inputs, grad)
    assert (got[0] == 0).all()
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)
    for name, a, b in zip("q k v extra".split(), got_grads, want_grads):
        assert (a[0] == 0).all(), f"gradient of {name} for the sample without keys"
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=1e-4, msg=f"gradient of {name}")
    padded = mask[1:].logical_not()[:, None].expand(-1, H, -1)  # padded keys get exactly no gradient
    assert padded.any() and (got_grads[1][1:][padded] == 0).all() and (got_grads[2][1:][padded] == 0).all()


@pytest.mark.parametrize("with_extra", [False, True])
def test_registered_operator_passes_pytorchs_operator_checks(ext, with_extra):
    """Schema, fake (meta) implementation incl. the heads-last output strides, autograd registration and
    AOT dispatch: what torch.compile relies on to keep the kernel inside a compiled graph."""
    g = torch.Generator().manual_seed(2)
    B, H, T, S, d = 2, 2, 6, 9, 5
    q, k, v = (torch.randn(B, H, n, d, generator=g).requires_grad_() for n in (T, S, S))
    extra = torch.randn(B, H, T, S, generator=g).requires_grad_() if with_extra else None
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 5:] = False
    torch.library.opcheck(narrow_attention_op, (q, k, v, extra, 0.3, 0.5, mask, with_extra))


def test_attend_agrees_with_the_pytorch_fallback(ext, monkeypatch):
    """attend() through the kernel and through SoftmaxAttention (MMFUSION_KERNELS=0): same values and gradients,
    including PSA's GELU-mixed logits and a sample with no real key."""
    g = torch.Generator().manual_seed(0)
    B, H, T, S, d = 3, 2, 9, 13, 5
    q, k, v = (torch.randn(B, H, n, d, generator=g) for n in (T, S, S))
    extra = torch.randn(B, H, T, S, generator=g)
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2] = False
    results = []
    for enabled in ("1", "0"):
        monkeypatch.setenv("MMFUSION_KERNELS", enabled)
        assert use_compiled_kernel(q) == (enabled == "1")
        xs = [t.clone().requires_grad_() for t in (q, k, v, extra)]
        out = attend(*xs[:3], mask, scale=0.4, extra=xs[3], beta=0.3, extra_gelu=True)
        results.append((out, torch.autograd.grad(out, xs, torch.ones_like(out))))
    (out_k, grads_k), (out_f, grads_f) = results
    torch.testing.assert_close(out_k, out_f, atol=1e-5, rtol=1e-5)
    assert (out_k[2] == 0).all()
    for a, b in zip(grads_k, grads_f):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_inference_uses_the_kernel_and_matches_sdpa(ext, monkeypatch):
    """Without gradients the kernel replaces SDPA for narrow heads, called directly rather than through the
    registered operator (whose dispatch costs more than a small attention); the numbers are SDPA's and the
    operator's. With gradients the operator runs (its backward is registered there)."""
    kernel_calls, op_calls = [], []
    real_kernel, real_op = backends._kernel_forward, backends.narrow_attention_op
    monkeypatch.setattr(backends, "_kernel_forward", lambda *a: kernel_calls.append(1) or real_kernel(*a))
    monkeypatch.setattr(backends, "narrow_attention_op", lambda *a: op_calls.append(1) or real_op(*a))
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, n, 5, generator=g) for n in (7, 10, 10))
    mask = torch.tensor([[True] * 10, [True] * 4 + [False] * 6])
    with torch.no_grad():
        out, _ = attention(q, k, v, mask)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    assert kernel_calls, "the compiled kernel did not run"
    assert not op_calls, "inference went through the operator's dispatch"
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(out, real_op(q, k, v, None, 1.0, 1.0 / math.sqrt(5), mask, False)[0])
    with torch.inference_mode():
        assert torch.equal(attention(q, k, v, mask)[0], out) and len(op_calls) == 0
    qg = q.clone().requires_grad_()
    attention(qg, k, v, mask)[0].sum().backward()
    assert op_calls and qg.grad is not None


def test_a_trace_records_the_operator_not_a_constant(ext):
    """torch.jit.trace without gradients: the kernel must be recorded as the operator, so the traced module follows
    new inputs instead of replaying the traced call's output."""
    class Attend(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return attention(q, k, v, mask)[0]

    g = torch.Generator().manual_seed(3)
    q, k, v, q2 = (torch.randn(1, 2, 6, 5, generator=g) for _ in range(4))
    mask = torch.tensor([[True] * 4 + [False] * 2])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.compile / export
        traced = torch.jit.trace(Attend(), (q, k, v, mask))
        torch.testing.assert_close(traced(q2, k, v, mask), Attend()(q2, k, v, mask))


def test_disabled_kernels_fall_back(monkeypatch):
    monkeypatch.setenv("MMFUSION_KERNELS", "off")
    assert kernels.narrow_attention() is None
    assert "MMFUSION_KERNELS" in kernels.unavailable_reason()
    assert not use_compiled_kernel(torch.zeros(1, 1, 2, 5))
    calls = []
    monkeypatch.setattr(backends.SoftmaxAttention, "apply",
                        lambda *a, real=backends.SoftmaxAttention.apply: calls.append(1) or real(*a))
    q = torch.randn(1, 1, 3, 5, requires_grad=True)
    attend(q, q, q, None).sum().backward()
    assert calls and q.grad is not None and torch.isfinite(q.grad).all()


def test_a_build_lock_left_by_a_killed_process_does_not_block_the_next(tmp_path):
    """PyTorch's build lock is a plain file a killed build leaves behind, after which every load() waits forever.
    mmfusion holds an flock around load(): the system drops it with its holder, and a lock file found under it has
    no builder any more."""
    import signal
    import subprocess
    import sys
    import threading

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, pathlib; from mmfusion.kernels import _exclusive\n"
         f"d = pathlib.Path({str(tmp_path)!r})\n"
         "with _exclusive(d):\n"
         "    (d / 'lock').touch(); print('building', flush=True); time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "building"  # holds the flock and PyTorch's lock file
        entered = threading.Event()

        def wait_for_it():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with kernels._exclusive(tmp_path):
                    entered.caught = caught
                    entered.set()

        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        assert not entered.wait(1.0)  # a live builder keeps others waiting
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert entered.wait(30)  # the flock went with its holder
        assert not (tmp_path / "lock").exists()
        assert any("left by an interrupted build" in str(w.message) for w in entered.caught)
    finally:
        if holder.poll() is None:
            holder.kill()


@pytest.mark.parametrize("module", ["cross_attention", "psa_mixing"])
def test_every_attention_setting_gives_the_same_numbers(ext, monkeypatch, module):
    """The same weights under attention=eager, sdpa and kernel (and auto, which takes the kernel here): the same
    outputs and gradients, with padded keys (and, for cross-attention, a sample without any real key), µ-mixed
    logits for PSA; the kernel runs under kernel and auto only."""
    from mmfusion.modules.attention import MultiHeadAttention
    from mmfusion.modules.psa import PredictiveSelfAttentionLayer

    g = torch.Generator().manual_seed(4)
    B, T, S, D = 3, 6, 9, 10  # 2 heads of width 5
    x, src, prev = torch.randn(B, T, D, generator=g), torch.randn(B, S, D, generator=g), None
    if module == "cross_attention":
        mask = torch.ones(B, S, dtype=torch.bool)
        mask[1, 5:], mask[2] = False, False
    else:
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[1, 4:] = False
        prev = tuple(torch.randn(B, 2, T, 5, generator=g) * mask[:, None, :, None] for _ in range(2))
    kernel_calls = []
    real = backends.kernel_attention
    monkeypatch.setattr(backends, "kernel_attention", lambda *a, **kw: kernel_calls.append(1) or real(*a, **kw))
    results = {}
    for setting in ("eager", "sdpa", "kernel", "auto"):
        torch.manual_seed(0)
        if module == "cross_attention":
            layer = MultiHeadAttention(D, 2, attention=setting)
            inputs = [x.clone().requires_grad_(), src.clone().requires_grad_()]
            out = layer(*inputs, mask)[0]
        else:
            layer = PredictiveSelfAttentionLayer(D, 2, predict=True, mu=0.3, attention=setting).eval()
            inputs = [x.clone().requires_grad_(), *(f.clone().requires_grad_() for f in prev)]
            out = layer(inputs[0], mask, tuple(inputs[1:]))[0]
        kernel_calls_here, kernel_calls[:] = len(kernel_calls), []
        assert bool(kernel_calls_here) == (setting in ("kernel", "auto")), setting
        results[setting] = (out, torch.autograd.grad(out, inputs, torch.ones_like(out)))
    want, want_grads = results["eager"]
    if module == "cross_attention":
        assert (want[2] == want[2, :1]).all()  # no real key: the output is the projection of zeros
    for setting in ("sdpa", "kernel", "auto"):
        got, grads = results[setting]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=setting)
        for a, b in zip(grads, want_grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=setting)


def test_auto_takes_the_kernel_and_kernel_refuses_what_it_cannot_serve(ext):
    from mmfusion.errors import ConfigError
    from mmfusion.modules.attention import choose

    q = torch.zeros(1, 2, 3, 5)
    assert choose("auto", q) == choose("auto", q, training=True, plain=False) == "kernel"
    assert choose("auto", q, dropout=0.1) == "sdpa" and choose("auto", q, dropout=0.1, plain=False) == "eager"
    assert choose("kernel", q) == "kernel" and choose("kernel", q, need_map=True) == "eager"
    with pytest.raises(ConfigError, match="attention-map dropout 0.1"):
        choose("kernel", q, dropout=0.1)
    with pytest.raises(ConfigError, match="torch.bfloat16 heads of width 5 on cpu"):
        choose("kernel", q.bfloat16())

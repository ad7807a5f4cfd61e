import pytest
import torch
import torch.nn.functional as F

from mmfusion.modules import psa
from mmfusion.modules.attention import merge_heads, split_heads
from mmfusion.modules.psa import (
    PredictiveSelfAttentionLayer,
    logits_from_factors,
    mixed_logits,
    predict_from_factors,
)


def _traceable(conv, factors):
    """The formulation compiled graphs trace (plain operations, autograd's backward)."""
    return psa._traceable_conv_of_product(*factors, conv.weight, conv.bias)


def _factored(conv, factors):
    """The factored product eager code runs beyond ``DIRECT_MAX_T`` frames (hand-written backward)."""
    return psa._conv_of_product(*factors, conv.weight, conv.bias)


def _dispatched(conv, factors, monkeypatch, direct_max_t):
    monkeypatch.setattr(psa, "DIRECT_MAX_T", direct_max_t)
    return predict_from_factors(conv, factors)


def _layer(mu, mixing="logits", predict=True):
    torch.manual_seed(0)
    return PredictiveSelfAttentionLayer(8, 2, predict=predict, mu=mu, mixing=mixing).eval()


def _factors(B=2, H=2, T=6, Dh=4, lengths=(6, 4)):
    torch.manual_seed(1)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    real = mask[:, None, :, None].float()
    return (torch.randn(B, H, T, Dh) * real, torch.randn(B, H, T, Dh) * real), mask


def test_mu_zero_mixing_is_exactly_plain_attention():
    """The mixing itself at µ = 0, given a large prediction: both the map-building and the fused paths ignore it
    and give plain attention; at µ = 0.5 the same calls do not."""
    from mmfusion.modules.attention import attend, attention

    factors, mask = _factors()
    q, k = factors
    v = torch.randn_like(k)
    pred = 5 * torch.randn(2, 2, 6, 6)  # a prediction far from S
    S = logits_from_factors(factors)
    keep = mask[:, None, None, :].expand_as(S)
    for mu in (0.0, 0.5):
        mixed = mixed_logits(F.gelu(pred), factors, mu, mask)
        fused = attend(q * (1.0 - mu), k, v, mask, scale=1.0, extra=pred, beta=mu, extra_gelu=True)
        plain = attention(q, k, v, mask, scale=1.0)[0]
        if mu == 0.0:
            torch.testing.assert_close(mixed[keep], S[keep], rtol=0, atol=1e-6)
            torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)
        else:
            assert not torch.allclose(mixed[keep], S[keep], atol=1e-2)
            assert not torch.allclose(fused, plain, atol=1e-2)
    # the layer takes the mixing path for any µ > 0 and approaches plain attention as µ -> 0; µ = 0 itself (the
    # no_prediction ablation) runs plain attention
    x = torch.randn(2, 6, 8)
    plain_layer = _layer(0.0, predict=False)
    ref = plain_layer(x, mask, None)[0]
    for mu, close in ((1e-6, True), (0.0, True), (0.5, False)):
        layer = _layer(mu)
        layer.load_state_dict({**plain_layer.state_dict(), **{k: v for k, v in layer.state_dict().items()
                                                             if k.startswith("predictor.")}})
        out = layer(x, mask, factors)[0]
        assert torch.allclose(out, ref, rtol=0, atol=1e-5) == close, mu


@pytest.mark.parametrize("lengths", [(7, 7, 7), (7, 5, 1)])
@pytest.mark.parametrize("predict", [predict_from_factors, _factored, _traceable],
                         ids=["dispatched", "factored", "traceable"])
def test_predicted_map_equals_conv2d_on_the_logit_map(lengths, predict):
    """The factored prediction is exactly Conv2d(3x3, same) over S = Q'K'ᵀ, padding included, in the
    hand-differentiated form eager code runs, in the traceable form compiled graphs run, and through
    ``predict_from_factors`` (which convolves S itself at this length)."""
    factors, _ = _factors(B=3, H=4, T=7, Dh=3, lengths=lengths)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    S = logits_from_factors(factors)
    torch.testing.assert_close(predict(conv, factors), conv(S), rtol=0, atol=1e-5)
    # gradients too (the chain trains the previous layer's queries and keys through it, and its own weights)
    conv = conv.double()
    q, k = (f.double().requires_grad_() for f in factors)
    weights = torch.randn(3, 4, 7, 7, dtype=torch.float64)
    (predict(conv, (q, k)) * weights).sum().backward()
    mine = [q.grad, k.grad, conv.weight.grad, conv.bias.grad]
    conv.zero_grad()
    q2, k2 = (f.double().requires_grad_() for f in factors)
    (conv(logits_from_factors((q2, k2))) * weights).sum().backward()
    for got, want in zip(mine, [q2.grad, k2.grad, conv.weight.grad, conv.bias.grad]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_predicted_map_without_bias_and_rectangular_channels():
    factors, _ = _factors(B=2, H=2, T=5, Dh=3, lengths=(5, 3))
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False).double()
    q, k = (f.double().requires_grad_() for f in factors)
    torch.testing.assert_close(_factored(conv, (q, k)), conv(logits_from_factors((q, k))))
    assert torch.autograd.gradcheck(lambda a, b: _factored(conv, (a, b)), (q, k))


def test_prediction_takes_the_factored_product_beyond_direct_max_t(monkeypatch):
    """Up to DIRECT_MAX_T frames the logit map is built and convolved, beyond it never; both give conv(S)."""
    factors, _ = _factors(B=2, H=2, T=6, Dh=3, lengths=(6, 4))
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    want = conv(logits_from_factors(factors))
    calls = []
    real_apply = psa._ConvOfProduct.apply
    monkeypatch.setattr(psa._ConvOfProduct, "apply", lambda *a: calls.append(1) or real_apply(*a))
    for limit, factored in ((6, False), (5, True)):
        calls.clear()
        torch.testing.assert_close(_dispatched(conv, factors, monkeypatch, limit), want, rtol=0, atol=1e-5)
        assert bool(calls) == factored, limit


def test_mixed_logits_mix_and_mask_keys():
    factors, mask = _factors()
    pred = torch.randn(2, 2, 6, 6)
    got = mixed_logits(pred, factors, 0.3, mask)
    want = 0.3 * pred + 0.7 * logits_from_factors(factors)
    keep = mask[:, None, None, :].expand_as(want)
    torch.testing.assert_close(got[keep], want[keep])
    assert (got[~keep] < -1e3).all()  # softmax gives padded keys exactly zero weight
    assert (got.softmax(-1)[~keep] == 0).all()


def test_prediction_chain_changes_the_map_and_mixing_options_differ():
    x, mask = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.bool)
    prev, _ = _factors(lengths=(6, 6))
    plain = _layer(0.0)(x, mask, prev, need_maps=True)[2]["psa"]
    mixed = _layer(0.5)(x, mask, prev, need_maps=True)[2]["psa"]
    literal = _layer(0.5, "literal")(x, mask, prev, need_maps=True)[2]["psa"]
    assert not torch.allclose(plain, mixed) and not torch.allclose(mixed, literal)
    S_prev = logits_from_factors(prev)
    for mixing, m in (("logits", mixed), ("literal", literal)):
        layer = _layer(0.5, mixing)
        _, factors, maps = layer(x, mask, prev, need_maps=True)
        S, P = logits_from_factors(factors), F.gelu(layer.predictor(S_prev))
        inner = S if mixing == "logits" else torch.softmax(S, -1)  # literal Eq. 2: softmax(mu P + (1-mu) softmax(S))
        torch.testing.assert_close(maps["psa"], torch.softmax(0.5 * P + 0.5 * inner, -1))
        torch.testing.assert_close(maps["psa"], m)
        # the map returned for inspection is the one the layer attends with (its plain forward takes the fused
        # path for "logits"): output = x + W_o(A_l V), then the residual FFN
        out = layer(x, mask, prev)[0]
        v = split_heads(layer.qkv(layer.norm_attn(x)).chunk(3, -1)[2], 2)
        h = x + layer.out_proj(merge_heads(maps["psa"] @ v))
        torch.testing.assert_close(out, h + layer.ffn(layer.norm_ffn(h)), rtol=1e-5, atol=1e-5)
    assert _layer(0.5)(x, mask, prev)[2] == {}  # no map is built in a plain forward


def test_padding_invariance_through_the_chain():
    """Two PSA layers: a sample's output does not depend on how much padding follows it."""
    torch.manual_seed(0)
    layers = [PredictiveSelfAttentionLayer(8, 2, predict=i > 0, mu=0.4).eval() for i in range(3)]
    x = torch.randn(1, 5, 8)

    def run(x, mask):
        prev = None
        for layer in layers:
            x, prev, _ = layer(x, mask, prev)
        return x

    short = run(x, torch.ones(1, 5, dtype=torch.bool))
    padded = torch.cat([x, torch.randn(1, 4, 8)], 1)
    long = run(padded, torch.tensor([[True] * 5 + [False] * 4]))
    torch.testing.assert_close(long[:, :5], short, rtol=0, atol=1e-5)
    assert (long[:, 5:] == 0).all()


def test_first_layer_has_no_predictor():
    assert _layer(0.3, predict=False).predictor is None
    assert isinstance(_layer(0.3).predictor, torch.nn.Conv2d)


@pytest.mark.parametrize("setting", ["sdpa", "auto"])
def test_mu_mixing_runs_the_same_under_every_setting(monkeypatch, setting):
    """A predicting layer (µ = 0.4) over padded clips: the fused mixed logits (SDPA's float mask, or auto's map-free
    form) give the eager map's outputs and gradients, and the map a forward with need_maps returns."""
    monkeypatch.setenv("MMFUSION_KERNELS", "0")
    prev, mask = _factors(B=2, H=2, T=6, Dh=4, lengths=(6, 4))
    x = torch.randn(2, 6, 8)

    def run(attention):
        torch.manual_seed(0)
        layer = PredictiveSelfAttentionLayer(8, 2, predict=True, mu=0.4, attention=attention).eval()
        xs, p = x.clone().requires_grad_(), tuple(f.clone().requires_grad_() for f in prev)
        out = layer(xs, mask, p)[0]
        return out, torch.autograd.grad(out, (xs, *p), torch.ones_like(out)), layer(x, mask, prev, True)[2]

    (want, want_grads, want_maps), (got, got_grads, got_maps) = run("eager"), run(setting)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_maps["psa"], want_maps["psa"])


def test_the_eager_setting_builds_the_map_as_written(monkeypatch):
    """attention=eager with map dropout: the mixing runs as the written-out map (no fused call)."""
    from mmfusion.modules import attention as attention_module

    monkeypatch.setattr(attention_module, "attend", lambda *a, **kw: pytest.fail("the fused path ran"))
    monkeypatch.setattr(psa, "attend", lambda *a, **kw: pytest.fail("the fused path ran"))
    prev, mask = _factors()
    layer = PredictiveSelfAttentionLayer(8, 2, predict=True, mu=0.4, attn_dropout=0.2, attention="eager").train()
    out = layer(torch.randn(2, 6, 8), mask, prev)[0]
    assert torch.isfinite(out).all() and (out[1, 4:] == 0).all()

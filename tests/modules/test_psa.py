import torch

from mmfusion.modules.attention import masked_softmax
from mmfusion.modules.psa import PredictiveSelfAttentionLayer


def _layer(mu, mixing="logits", predict=True):
    torch.manual_seed(0)
    return PredictiveSelfAttentionLayer(8, 2, predict=predict, mu=mu, mixing=mixing).eval()


def test_mu_zero_is_exactly_plain_softmax_attention():
    x, mask = torch.randn(2, 6, 8), torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    prev = torch.randn(2, 2, 6, 6)
    layer = _layer(0.0)
    _, logits, maps = layer(x, mask, prev, need_vanilla=True)
    expected = masked_softmax(logits, mask) * mask[:, None, :, None]
    assert torch.equal(maps["psa"], expected)
    assert torch.equal(maps["psa"], maps["vanilla"] * mask[:, None, :, None])


def test_prediction_chain_changes_the_map_and_mixing_options_differ():
    x, mask = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.bool)
    prev = torch.randn(2, 2, 6, 6)
    plain = _layer(0.0)(x, mask, prev)[2]["psa"]
    mixed = _layer(0.5)(x, mask, prev)[2]["psa"]
    literal = _layer(0.5, "literal")(x, mask, prev)[2]["psa"]
    assert not torch.allclose(plain, mixed) and not torch.allclose(mixed, literal)
    # literal Eq. 2: softmax(mu * P + (1 - mu) * softmax(S))
    layer = _layer(0.5, "literal")
    _, S, maps = layer(x, mask, prev)
    assert "vanilla" in maps  # Eq. 2 needs the plain map
    assert "vanilla" not in _layer(0.5)(x, mask, prev)[2]  # logit mixing does not compute it in training
    P = torch.nn.functional.gelu(layer.predictor(prev))
    torch.testing.assert_close(maps["psa"], torch.softmax(0.5 * P + 0.5 * torch.softmax(S, -1), -1))
    for m in (mixed, literal):
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 2, 6))


def test_first_layer_has_no_predictor():
    assert _layer(0.3, predict=False).predictor is None
    assert isinstance(_layer(0.3).predictor, torch.nn.Conv2d)

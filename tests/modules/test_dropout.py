"""The CPU dropout with cheap masks: the drop rate, the scale, the gradient, determinism and the identity cases."""

import pytest
import torch

from mmfusion.modules.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5 + 2**-16  # within 4 standard errors
    kept = y[y != 0]
    assert torch.allclose(kept, kept[0].expand_as(kept)) and abs(kept[0].item() * (1 - p) - 1) < 1e-4
    assert abs(y.mean().item() - 1) < 0.01  # inverted dropout keeps the expectation


def test_masks_are_independent_across_positions():
    """Neighbouring elements come from different 16-bit lanes of one draw: their drops must not be correlated."""
    torch.manual_seed(1)
    keep = (dropout(torch.ones(4, 100_000), 0.5) != 0).float()
    for shift in (1, 2, 3, 4):
        corr = torch.corrcoef(torch.stack([keep.flatten()[:-shift], keep.flatten()[shift:]]))[0, 1]
        assert abs(corr.item()) < 0.01


def test_gradient_is_the_mask():
    torch.manual_seed(2)
    x = torch.randn(8, 50, 16, requires_grad=True)
    y = dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    scale = (y / x).detach()  # 0 or 1 / (1 - p')
    torch.testing.assert_close(x.grad, g * scale)
    assert ((scale == 0) == (y == 0)).all()


def test_seeded_masks_repeat_and_eval_is_identity():
    layer = Dropout(0.2)
    x = torch.randn(3, 7, 5)
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(a, layer(x))
    assert not torch.equal(a, layer(x))  # the next draw differs
    layer.eval()
    assert layer(x) is x
    assert dropout(x, 0.0) is x
    assert (dropout(x, 1.0) == 0).all()

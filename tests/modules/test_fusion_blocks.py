import torch

from mmfusion.modules.discriminators import grad_reverse
from mmfusion.modules.graph_fusion import GraphFusion
from mmfusion.modules.losses import hsic, hsic_trace
from mmfusion.modules.wal import WeightedAttentionLayer


def test_wal_weights_sum_to_one_and_scale_streams():
    wal = WeightedAttentionLayer(["text", "vision", "audio"], 6, 5)
    z = {"text": torch.randn(4, 3, 6), "vision": torch.randn(4, 7, 6), "audio": torch.randn(4, 2, 6)}
    masks = {m: torch.ones(4, x.shape[1], dtype=torch.bool) for m, x in z.items()}
    out, psi = wal(z, masks)
    assert psi.shape == (4, 3)
    torch.testing.assert_close(psi.sum(-1), torch.ones(4))
    torch.testing.assert_close(out["vision"], z["vision"] * psi[:, 1, None, None])


def test_graph_weights_sum_to_one_over_neighbours():
    fused, xi = GraphFusion(5)(torch.randn(4, 3, 5))
    assert fused.shape == (4, 5)
    torch.testing.assert_close(xi.sum(-1), torch.ones(4, 3))
    assert (torch.diagonal(xi, dim1=1, dim2=2) == 0).all()


def test_hsic_equals_trace_formula_and_detects_dependence():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randn(50, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(hsic(x, y), hsic_trace(x, y))
    big_x, big_y = torch.randn(2000, 4, generator=g), torch.randn(2000, 4, generator=g)
    independent = hsic(big_x, big_y)
    dependent = hsic(big_x, big_x @ torch.randn(4, 4, generator=g) + 0.1 * big_y)
    assert independent < 0.05 and dependent > 20 * independent and dependent > 1.0


def test_gradient_reversal_negates_and_scales():
    x = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(4)
    (grad_reverse(x, 0.7) @ w).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * w.expand(3, 4))

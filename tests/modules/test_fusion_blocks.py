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


def test_orthogonality_is_normalised_like_dsn_and_starts_at_hsics_scale():
    from mmfusion.modules.losses import orthogonality

    g = torch.Generator().manual_seed(0)
    n, d = 32, 64
    # codes as an untrained network gives them: a mean shared by the batch plus a small per-clip part (MEA's
    # exclusive and agnostic codes at initialisation: mean norm ~0.7, per-clip spread ~0.3 over 64 dimensions)
    x = 0.09 * torch.randn(d, generator=g) + 0.04 * torch.randn(n, d, generator=g)
    y = 0.09 * torch.randn(d, generator=g) + 0.04 * torch.randn(n, d, generator=g)  # independent of x
    ratio = (orthogonality(x, y) / hsic(x, y)).item()
    assert 1 / 30 < ratio < 30, ratio  # within 1.5 orders of magnitude (MEA's own codes at initialisation: 7-17x)
    assert (x.T @ y).square().sum() / hsic(x, y) > 1e5  # the plain ‖XᵀY‖²_F: what the normalisation removes
    # DSN's normalisation: centred over the batch, L2-normalised per sample, averaged over the d·d entries
    xc, yc = x - x.mean(0), y - y.mean(0)
    xn, yn = xc / xc.norm(dim=1, keepdim=True), yc / yc.norm(dim=1, keepdim=True)
    torch.testing.assert_close(orthogonality(x, y), (xn.T @ yn).square().sum() / d**2)
    # free of the codes' scale and offset, and still a measure of dependence
    torch.testing.assert_close(orthogonality(5 * x + 3, y), orthogonality(x, y))
    big_x, big_y = torch.randn(1000, d, generator=g), torch.randn(1000, d, generator=g)
    dependent = orthogonality(big_x, 2 * big_x[:, torch.randperm(d, generator=g)] + 0.1 * big_y)
    assert dependent > 5 * orthogonality(big_x, big_y)
    assert orthogonality(x[:1], y[:1]) == 0


def test_graph_fusion_leaves_a_missing_modality_out_as_if_it_had_no_node():
    torch.manual_seed(0)
    graph = GraphFusion(5)
    nodes = torch.randn(4, 3, 5)
    present = torch.ones(4, 3, dtype=torch.bool)
    present[1, 1] = False  # clip 1 has no vision
    present[2, [0, 2]] = False  # clip 2 has vision only
    fused, xi = graph(nodes, present)
    full, _ = graph(nodes)
    torch.testing.assert_close(fused[[0, 3]], full[[0, 3]])
    two, _ = graph(nodes[1:2, [0, 2]])  # the same weights on the 2-node graph of clip 1's present modalities
    torch.testing.assert_close(fused[1], two[0])
    assert (xi[1, :, 1] == 0).all() and torch.allclose(xi[1, [0, 2]].sum(-1), torch.ones(2))
    # a lone node has no neighbour: Σ_j over nothing is 0 and σ(0) = 1/2 in every dimension
    torch.testing.assert_close(fused[2], torch.full((5,), 0.5))
    # nothing of a missing node reaches the output
    moved = nodes.clone()
    moved[1, 1] += 10
    torch.testing.assert_close(graph(moved, present)[0], fused)


def test_wal_gives_a_missing_modality_no_weight():
    wal = WeightedAttentionLayer(["text", "vision", "audio"], 6, 5)
    z = {"text": torch.randn(2, 3, 6), "vision": torch.randn(2, 7, 6), "audio": torch.randn(2, 2, 6)}
    masks = {m: torch.ones(2, x.shape[1], dtype=torch.bool) for m, x in z.items()}
    masks["audio"][1] = False
    z["audio"][1] = 0
    _, psi = wal(z, masks)
    assert psi[1, 2] == 0 and psi[0, 2] > 0
    torch.testing.assert_close(psi.sum(-1), torch.ones(2))

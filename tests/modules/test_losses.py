import torch

from mmfusion.modules.losses import hsic, hsic_trace, orthogonality


def test_hsic_equals_trace_formula_and_detects_dependence():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randn(50, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(hsic(x, y), hsic_trace(x, y))
    big_x, big_y = torch.randn(2000, 4, generator=g), torch.randn(2000, 4, generator=g)
    independent = hsic(big_x, big_y)
    dependent = hsic(big_x, big_x @ torch.randn(4, 4, generator=g) + 0.1 * big_y)
    assert independent < 0.05 and dependent > 20 * independent and dependent > 1.0


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


def test_masked_hsic_and_orthogonality_equal_the_kept_rows_alone():
    """The masked forms (which a compiled graph can hold) are the losses of the kept rows; the dropped rows' values
    do not matter, and fewer than two kept rows give 0."""
    torch.manual_seed(3)
    x, y = torch.randn(9, 5), torch.randn(9, 4) + 2.0
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    garbage_x, garbage_y = x.clone(), y.clone()
    garbage_x[~keep], garbage_y[~keep] = 1e3, -1e3
    for normalize in (False, True):
        want = hsic(x[keep], y[keep], normalize)
        torch.testing.assert_close(hsic(garbage_x, garbage_y, normalize, keep), want)
    torch.testing.assert_close(orthogonality(garbage_x, garbage_y, keep), orthogonality(x[keep], y[keep]))
    one = torch.zeros(9, dtype=torch.bool)
    one[4] = True
    assert hsic(x, y, keep=one) == 0 and orthogonality(x, y, one) == 0

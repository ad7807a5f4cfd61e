import torch

from mmfusion.modules.masking import compact, masked_last, masked_mean, positions_from_mask, uncompact
from mmfusion.modules.rnn import MaskedLSTM


def test_masked_mean_and_last_ignore_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[100.0], [2.0], [4.0]], [[7.0], [7.0], [7.0]]])
    mask = torch.tensor([[True, True, False], [False, True, True], [False, False, False]])
    assert masked_mean(x, mask).squeeze(-1).tolist() == [2.0, 3.0, 0.0]
    assert masked_last(x, mask).squeeze(-1).tolist() == [3.0, 4.0, 0.0]
    assert positions_from_mask(mask).tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]


def test_compact_round_trip():
    x = torch.arange(12.0).reshape(2, 6, 1)
    mask = torch.tensor([[False, True, False, True, True, False], [True] * 6])
    xc, lengths, order = compact(x, mask)
    assert xc[0, :3, 0].tolist() == [1.0, 3.0, 4.0] and lengths.tolist() == [3, 6]
    back = uncompact(xc, order, mask)
    torch.testing.assert_close(back, x * mask[..., None])


def test_masked_lstm_matches_unpadded_run():
    lstm = MaskedLSTM(3, 4, bidirectional=True)
    x = torch.randn(1, 5, 3)
    ref_out, ref_final = lstm(x, torch.ones(1, 5, dtype=torch.bool))
    padded = torch.cat([torch.randn(1, 2, 3) * 9, x, torch.randn(1, 3, 3)], 1)
    mask = torch.tensor([[False, False] + [True] * 5 + [False] * 3])
    out, final = lstm(padded, mask)
    torch.testing.assert_close(out[0, 2:7], ref_out[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(final, ref_final, atol=1e-6, rtol=1e-5)
    assert (out[0, :2] == 0).all() and (out[0, 7:] == 0).all()


def test_masked_lstm_in_place_path_equals_packed_nn_lstm():
    """The CPU path (real frames first, one fused call per direction) against nn.LSTM on packed sequences: outputs,
    final states and every gradient, for stacked/bidirectional LSTMs, padding on either side or in the middle, and
    an empty row; NaN in the padding stays out."""
    torch.manual_seed(0)
    mask = torch.tensor([[True] * 7, [False, False, True, True, True, False, False], [False] * 7,
                         [True, False, True, False, True, True, False], [False, False, False, True, True, True, True]])
    for layers, bidirectional in ((1, True), (1, False), (2, True), (2, False)):
        lstm = MaskedLSTM(3, 4, num_layers=layers, bidirectional=bidirectional)
        x = torch.randn(5, 7, 3) * mask[..., None]
        x[~mask] = 1e4  # padding content must not matter
        results = []
        for run in (lstm._forward_in_place, lstm._forward_packed):
            lstm.zero_grad()
            xi = x.clone().requires_grad_()
            out, final = run(xi, mask)
            w = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
            ((out * w).sum() + final.square().sum()).backward()
            results.append((out.detach(), final.detach(), xi.grad[mask],
                            [p.grad.clone() for p in lstm.parameters()]))
        (out, final, gx, gp), (ref_out, ref_final, ref_gx, ref_gp) = results
        assert torch.isfinite(out).all() and (out[~mask] == 0).all() and (final[2] == 0).all()
        torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(final, ref_final, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(gx, ref_gx, atol=1e-6, rtol=1e-5)
        for g, ref in zip(gp, ref_gp, strict=True):
            torch.testing.assert_close(g, ref, atol=1e-5, rtol=1e-4)
        x[~mask] = float("nan")  # not even NaN
        for run, want in ((lstm._forward_in_place, (out, final)), (lstm._forward_packed, (ref_out, ref_final))):
            got = run(x, mask)
            torch.testing.assert_close(got[0].detach(), want[0])
            torch.testing.assert_close(got[1].detach(), want[1])

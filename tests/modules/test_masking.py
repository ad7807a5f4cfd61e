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

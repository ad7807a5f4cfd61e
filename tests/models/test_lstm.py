import torch

from mmfusion.models.lstm import resample


def test_resample_bins_real_frames_only():
    x = torch.tensor([[[1.0], [2.0], [3.0], [4.0], [9.0], [9.0]]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    torch.testing.assert_close(resample(x, mask, 2)[0, :, 0], torch.tensor([1.5, 3.5]))
    torch.testing.assert_close(resample(x, mask, 8)[0, :, 0], torch.tensor([1.0, 1, 2, 2, 3, 3, 4, 4]))

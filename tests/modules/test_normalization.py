"""ModalityStandardizer: per-modality batch statistics over present clips, running estimates in evaluation."""

import torch

from mmfusion.modules.normalization import ModalityStandardizer


def _codes(seed: int = 0, B: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([[5.0, -3.0, 0.0], [-8.0, 2.0, 1.0], [0.5, 9.0, -4.0]])  # one cluster per modality
    x = offsets[None] + torch.tensor([0.5, 2.0, 1.0])[None, :, None] * torch.randn(B, 3, 3, generator=g)
    present = torch.ones(B, 3, dtype=torch.bool)
    present[3:7, 1] = False  # four clips without modality 1
    return x, present


def test_training_standardises_each_modality_over_its_present_clips_only():
    x, present = _codes()
    norm = ModalityStandardizer(3, 3).train()
    out = norm(x, present)
    for m in range(3):
        rows = out[present[:, m], m]
        torch.testing.assert_close(rows.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(rows.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert out[~present].eq(0).all()
    # an absent pair's values enter no statistic
    moved = x.clone()
    moved[~present] = 1e4
    torch.testing.assert_close(ModalityStandardizer(3, 3).train()(moved, present), out)
    assert x[present[:, 1], 1].mean(0).sub(x[:, 0].mean(0)).abs().max() > 5  # the offsets that were there


def test_running_estimates_follow_the_batches_and_serve_evaluation():
    x, present = _codes()
    norm = ModalityStandardizer(3, 3, momentum=1.0).train()  # momentum 1: the running values are the last batch's
    norm(x, present)
    keep = present[:, 1]
    torch.testing.assert_close(norm.running_mean[1], x[keep, 1].mean(0))
    torch.testing.assert_close(norm.running_var[1], x[keep, 1].var(0, unbiased=True))
    norm.eval()
    y, _ = _codes(seed=1)
    expect = (y - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(norm(y, torch.ones(16, 3, dtype=torch.bool)), expect)
    # a modality with fewer than two present clips keeps its running values and is scaled by them in training
    before = norm.running_mean.clone()
    lone = torch.zeros(16, 3, dtype=torch.bool)
    lone[:, 0] = True
    lone[0, 2] = True
    norm.train()(y, lone)
    torch.testing.assert_close(norm.running_mean[1:], before[1:])
    assert not torch.equal(norm.running_mean[0], before[0])


def test_estimate_takes_the_exact_statistics_of_what_passes_in_evaluation_mode():
    norm = ModalityStandardizer(3, 3, momentum=0.5).eval()
    batches = [_codes(seed) for seed in range(3)]
    norm.estimate(lambda: [norm(x, p) for x, p in batches])
    x = torch.cat([b[0] for b in batches])
    present = torch.cat([b[1] for b in batches])
    for m in range(3):
        rows = x[present[:, m], m]
        torch.testing.assert_close(norm.running_mean[m], rows.mean(0))
        torch.testing.assert_close(norm.running_var[m], rows.var(0, unbiased=True))
    assert not norm._forward_hooks  # the collecting hook is gone

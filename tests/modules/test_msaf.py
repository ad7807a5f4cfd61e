import pytest
import torch

from mmfusion.modules.msaf import SplitAttentionFusion

REFERENCE = [  # (channels, block size, reduction, segments, parameter count) docs/design/msaf.md §1
    ([1024, 32], 16, 4, 1, 5356),
    ([2048, 64], 32, 4, 1, 19288),
    ([32, 64, 128], 16, 2, 5, 10840),
    ([832, 128, 128], 64, 4, 1, 19568),
    ([1024, 512], 256, 4, 1, 116416),
]


@pytest.mark.parametrize("channels,C,r,q,count", REFERENCE)
def test_parameter_counts_match_reference_configurations(channels, C, r, q, count):
    assert sum(p.numel() for p in SplitAttentionFusion(channels, C, r, split_block=q).parameters()) == count


def test_softmax_over_blocks_and_output_bounds_in_eval():
    torch.manual_seed(0)
    msaf = SplitAttentionFusion([8, 4], block_size=4, reduction=2, lowest_atten=0.3).eval()
    x = [torch.rand(3, 8, 5), torch.rand(3, 4, 2, 2)]
    out = msaf(x)
    alpha = msaf.last_attention  # (B, q, N, C)
    raw = (alpha - 0.3) / 0.7
    torch.testing.assert_close(raw.sum(2), torch.ones(3, 1, 4))
    for xi, yi in zip(x, out):
        ratio = yi / xi  # positive inputs: the per-block factor
        assert (ratio >= 0.3 - 1e-6).all() and (ratio <= 1 + 1e-6).all()


def test_mixed_rank_inputs_keep_shapes_and_odd_channels_work():
    msaf = SplitAttentionFusion([20, 7, 5], block_size=8, reduction=2)  # none divisible by 8
    x = {"video": torch.randn(2, 20, 3, 4, 4), "audio": torch.randn(2, 7, 9), "meta": torch.randn(2, 5)}
    out = msaf(x)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in x.items()}
    assert msaf.n_blocks == [3, 1, 1]


def test_segments_with_remainder_and_vector_input_error():
    msaf = SplitAttentionFusion([6, 6], block_size=3, split_block=3).eval()
    x = [torch.rand(2, 6, 10), torch.rand(2, 6, 7)]  # 10 = 3+3+4, 7 = 2+2+3
    out = msaf(x)
    assert [o.shape for o in out] == [t.shape for t in x]
    assert msaf.last_attention.shape == (2, 3, 4, 3)
    # steps of the same segment share one factor; the remainder joins the last segment
    f = out[0] / x[0]
    torch.testing.assert_close(f[:, :, 6], f[:, :, 9])
    assert not torch.allclose(f[:, :, 0], f[:, :, 9])
    with pytest.raises(ValueError, match="needs a time axis"):
        SplitAttentionFusion([6, 6], block_size=3, split_block=2)([torch.rand(2, 6), torch.rand(2, 6, 4)])


def test_padding_mask_invariance():
    torch.manual_seed(0)
    msaf = SplitAttentionFusion([8, 4], block_size=4, split_block=2).eval()
    a, b = torch.randn(2, 8, 6), torch.randn(2, 4, 5)
    ma, mb = torch.ones(2, 6, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    ref = msaf([a, b], [ma, mb])
    pa = torch.cat([a, 99 * torch.randn(2, 8, 4)], 2)
    pma = torch.cat([ma, torch.zeros(2, 4, dtype=torch.bool)], 1)
    out = msaf([pa, b], [pma, mb])
    torch.testing.assert_close(out[0][:, :, :6], ref[0])
    torch.testing.assert_close(out[1], ref[1])


def test_batch_of_one_trains_and_dropout_applied_once():
    msaf = SplitAttentionFusion([8, 4], block_size=4, dropout=0.5).train()
    x = [torch.rand(1, 8, 3, requires_grad=True), torch.rand(1, 4, 3)]
    sum(o.sum() for o in msaf(x)).backward()
    assert x[0].grad is not None
    # dropped blocks are zero; kept blocks are scaled by 1/(1-p) once (2x at most with α <= 1), 4x in compat mode
    torch.manual_seed(1)
    y = msaf([torch.ones(4, 8, 3), torch.ones(4, 4, 3)])[0]
    assert (y == 0).any() and y.max() <= 2.0 + 1e-5
    compat = SplitAttentionFusion([8, 4], block_size=4, dropout=0.5, reference_compat=True).train()
    compat.load_state_dict(msaf.state_dict())
    torch.manual_seed(1)
    yc = compat([torch.ones(4, 8, 3), torch.ones(4, 4, 3)])[0]
    kept = y > 0
    assert kept.any() and (yc[kept] > y[kept]).all()


@pytest.mark.parametrize("channels,C,r,q,count", REFERENCE)
def test_equal_to_the_reference_module_on_its_configurations(channels, C, r, q, count):
    """Padding, the mask-aware squeeze and single dropout change nothing on the reference's own shapes: with the
    same weights, eval outputs equal the authors' MSAF (re-created in tests/models/reference_msaf.py), also with
    q = 5 segments over a length that leaves a remainder."""
    from tests.models.reference_msaf import RefMSAF, randomize

    ref = randomize(RefMSAF(channels, C, 0.2, 0.5 if len(channels) == 3 and q == 1 else 0.0, r, q), seed=q)
    ours = SplitAttentionFusion(channels, C, r, dropout=0.2, lowest_atten=0.5 if len(channels) == 3 and q == 1
                                else 0.0, split_block=q).eval()
    state = {k.replace("blocks.", "steps.").replace("joint_features", "joint").replace("dense_group", "excite"): v
             for k, v in ref.state_dict().items()}
    ours.load_state_dict(state)
    g = torch.Generator().manual_seed(0)
    trailing = [(23,), (23,), (23,)] if q > 1 else [(2, 3, 3), (5,), (4, 2)]  # q > 1: 23 = 4 x 4 + 7 steps
    x = [torch.randn(2, c, *trailing[i % 3], generator=g) for i, c in enumerate(channels)]
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)

import torch

from mmfusion.modules.attention import attention, masked_softmax


def test_eager_and_sdpa_agree_including_empty_rows():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, s, 4, generator=g) for s in (5, 7, 7))
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [False] * 7])
    eager, attn = attention(q, k, v, mask, need_weights=True)
    fast, _ = attention(q, k, v, mask)
    torch.testing.assert_close(eager, fast, atol=1e-5, rtol=1e-5)
    assert attn is not None and (attn[1, :, :, 3:] == 0).all()
    assert (eager[2] == 0).all() and torch.isfinite(eager).all()
    torch.testing.assert_close(attn[:2].sum(-1), torch.ones(2, 2, 5))


def test_masked_softmax_ignores_masked_logits():
    logits = torch.tensor([[[[1.0, 2.0, 100.0]]]])
    out = masked_softmax(logits, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([*torch.softmax(torch.tensor([1.0, 2.0]), 0), 0.0]))

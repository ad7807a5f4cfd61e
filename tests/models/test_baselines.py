import math

import torch

from mmfusion.models import build
from mmfusion.models.lstm import resample
from mmfusion.modules.attention import MultiHeadAttention


def test_mult_cross_attention_matches_naive_masked_reference():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval().requires_grad_(False)
    x, src = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4, [True] * 5 + [False]])
    out, _ = mha(x, src, mask)
    for b in range(3):
        real = src[b, mask[b]]  # only the real source frames exist for the naive version
        q = mha.q_proj(x[b]).view(4, 2, 4)
        k = mha.k_proj(real).view(len(real), 2, 4)
        v = mha.v_proj(real).view(len(real), 2, 4)
        heads = []
        for h in range(2):
            scores = [[float(q[i, h] @ k[j, h]) / math.sqrt(4) for j in range(len(real))] for i in range(4)]
            w = torch.softmax(torch.tensor(scores), -1)
            heads.append(w @ v[:, h])
        naive = mha.out_proj(torch.cat(heads, -1))
        torch.testing.assert_close(out[b], naive, atol=1e-5, rtol=1e-5)


def test_resample_bins_real_frames_only():
    x = torch.tensor([[[1.0], [2.0], [3.0], [4.0], [9.0], [9.0]]])
    mask = torch.tensor([[True, True, True, True, False, False]])
    torch.testing.assert_close(resample(x, mask, 2)[0, :, 0], torch.tensor([1.5, 3.5]))
    torch.testing.assert_close(resample(x, mask, 8)[0, :, 0], torch.tensor([1.0, 1, 2, 2, 3, 3, 4, 4]))


def test_tfn_fuses_by_outer_product():
    model = build("tfn_tiny", {"text": 3, "vision": 2, "audio": 2}, 1)
    assert model.head[1].in_features == (4 + 1) * (3 + 1) * (2 + 1)


def test_misa_losses_are_named_and_positive():
    dims = {"text": 5, "vision": 4, "audio": 3}
    feats = {m: torch.randn(6, 4, d) for m, d in dims.items()}
    masks = {m: torch.ones(6, 4, dtype=torch.bool) for m in dims}
    out = build("misa_tiny", dims, 1)(feats, masks)
    assert set(out["losses"]) == {"diff", "sim", "recon"} and all(v > 0 for v in out["losses"].values())

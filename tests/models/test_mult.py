import math

import torch

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

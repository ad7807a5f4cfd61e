import torch

from mmfusion.modules.wal import WeightedAttentionLayer


def test_wal_weights_sum_to_one_and_scale_streams():
    wal = WeightedAttentionLayer(["text", "vision", "audio"], 6, 5)
    z = {"text": torch.randn(4, 3, 6), "vision": torch.randn(4, 7, 6), "audio": torch.randn(4, 2, 6)}
    masks = {m: torch.ones(4, x.shape[1], dtype=torch.bool) for m, x in z.items()}
    out, psi = wal(z, masks)
    assert psi.shape == (4, 3)
    torch.testing.assert_close(psi.sum(-1), torch.ones(4))
    torch.testing.assert_close(out["vision"], z["vision"] * psi[:, 1, None, None])


def test_wal_gives_a_missing_modality_no_weight():
    wal = WeightedAttentionLayer(["text", "vision", "audio"], 6, 5)
    z = {"text": torch.randn(2, 3, 6), "vision": torch.randn(2, 7, 6), "audio": torch.randn(2, 2, 6)}
    masks = {m: torch.ones(2, x.shape[1], dtype=torch.bool) for m, x in z.items()}
    masks["audio"][1] = False
    z["audio"][1] = 0
    _, psi = wal(z, masks)
    assert psi[1, 2] == 0 and psi[0, 2] > 0
    torch.testing.assert_close(psi.sum(-1), torch.ones(2))

import torch

from mmfusion.models import build


def test_misa_losses_are_named_and_positive():
    dims = {"text": 5, "vision": 4, "audio": 3}
    feats = {m: torch.randn(6, 4, d) for m, d in dims.items()}
    masks = {m: torch.ones(6, 4, dtype=torch.bool) for m in dims}
    out = build("misa_tiny", dims, 1)(feats, masks)
    assert set(out["losses"]) == {"diff", "sim", "recon"} and all(v > 0 for v in out["losses"].values())

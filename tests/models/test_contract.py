"""The contract every registered sequence model keeps (tiny variants; sizes deliberately all different)."""

import pytest
import torch

from mmfusion.models import build, list_models

DIMS = {"text": 13, "vision": 5, "audio": 20}
LENS = {"text": 7, "vision": 11, "audio": 5}


def _names():
    names = list_models(inputs="sequences")
    return [n for n in names if n.endswith("_tiny") or f"{n}_tiny" not in names]


def _inputs(B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats, masks = {}, {}
    for m, d in DIMS.items():
        T = LENS[m]
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        x = torch.randn(B, T, d, generator=g)
        mask = torch.arange(T)[None, :] < lengths[:, None]
        feats[m], masks[m] = x * mask[..., None], mask
    return feats, masks


def _more_garbage_padding(feats, masks, extra=6):
    """Append ``extra`` padded frames and fill every padded frame with large random values."""
    f2, m2 = {}, {}
    for m, x in feats.items():
        x = torch.cat([x, torch.zeros(x.shape[0], extra, x.shape[2])], 1)
        k = torch.cat([masks[m], torch.zeros(x.shape[0], extra, dtype=torch.bool)], 1)
        f2[m] = torch.where(k[..., None], x, 50 * torch.randn_like(x))
        m2[m] = k
    return f2, m2


@pytest.mark.parametrize("name", _names())
def test_forward_backward_finite(name):
    model = build(name, DIMS, 8)
    feats, masks = _inputs()
    out = model(feats, masks)
    assert out["pred"].shape == (3, 8) and torch.isfinite(out["pred"]).all()
    loss = out["pred"].square().mean() + sum(out.get("losses", {}).values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.parametrize("name", _names())
def test_trains_under_bf16_autocast(name):
    """What `--precision bf16-mixed` runs on a CPU: finite outputs and gradients for every parameter that gets one."""
    model = build(name, DIMS, 8)
    feats, masks = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats, masks)
        loss = out["pred"].float().square().mean() + sum(v.float() for v in out.get("losses", {}).values())
    loss.backward()
    assert torch.isfinite(out["pred"].float()).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", _names())
def test_padding_invariance(name):
    model = build(name, DIMS, 1).eval()
    feats, masks = _inputs()
    with torch.no_grad():
        ref = model(feats, masks)["pred"]
        # more padding, filled with garbage, on every modality
        f2, m2 = _more_garbage_padding(feats, masks)
        padded = model(f2, m2)["pred"]
        # the same first sample in a batch with different companions
        f3, m3 = _inputs(B=5, seed=1)
        for m in DIMS:
            f3[m][0], m3[m][0] = feats[m][0], masks[m][0]
        alone = model(f3, m3)["pred"][0]
        # left padding instead of right padding
        f4 = {m: torch.stack([torch.roll(x, int((~k).sum()), 0) for x, k in zip(feats[m], masks[m])]) for m in DIMS}
        m4 = {m: torch.stack([torch.roll(k, int((~k).sum()), 0) for k in masks[m]]) for m in DIMS}
        left = model(f4, m4)["pred"]
    torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone, ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", _names())
def test_missing_modality_and_batch_of_one(name):
    model = build(name, DIMS, 1)
    feats, masks = _inputs()
    masks["vision"][1] = False
    feats["vision"][1] = 0
    out = model(feats, masks)["pred"]
    assert torch.isfinite(out).all()
    f1 = {m: x[:1] for m, x in feats.items()}
    m1 = {m: x[:1] for m, x in masks.items()}
    out1 = model.train()(f1, m1)
    (out1["pred"].sum() + sum(out1.get("losses", {}).values())).backward()

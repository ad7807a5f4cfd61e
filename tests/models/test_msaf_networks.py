import torch

from mmfusion.models import build, list_models


def test_clip_models_are_registered_apart_from_sequence_models():
    assert {"msaf_ravdess", "msaf_ntu"} <= set(list_models(inputs="clips"))
    assert "msaf_ravdess" not in list_models(inputs="sequences")


def test_full_size_parameter_counts():
    ravdess = sum(p.numel() for p in build("msaf_ravdess", {}, 8).parameters())
    assert abs(ravdess - 25.94e6) < 0.05e6  # the paper reports 25.94 M
    ntu = build("msaf_ntu", {}, 60)
    assert ntu.rgb.channels_4f == 832 and ntu.rgb.channels_5c == 1024
    assert ntu.skeleton.person_channels == 128 and ntu.skeleton.fc_channels == 512


def _train_steps(model, feats, labels, steps=2):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        out = model(feats, {})["pred"]
        loss = torch.nn.functional.cross_entropy(out, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return out


def test_ravdess_tiny_trains():
    model = build("msaf_ravdess_tiny", {}, 8)
    feats = {"video": torch.randn(2, 3, 8, 32, 32), "audio": torch.randn(2, 13, 64)}
    out = _train_steps(model, feats, torch.tensor([1, 5]))
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    assert model.msaf1.last_attention.shape[-1] == 8 and model.msaf2.last_attention.shape[-1] == 16


def test_ntu_tiny_trains():
    model = build("msaf_ntu_tiny", {}, 60)
    feats = {"rgb": torch.randn(2, 3, 8, 32, 32), "skeleton": torch.randn(2, 2, 3, 16, 25)}
    out = _train_steps(model, feats, torch.tensor([0, 59]))
    assert out.shape == (2, 60) and torch.isfinite(out).all()


def test_pretrained_branch_weights_load_from_a_local_file(tmp_path):
    import pytest

    from mmfusion.errors import ConfigError, DataError
    from mmfusion.models import load_pretrained

    donor = build("msaf_ravdess_tiny", {}, 8)
    torch.save({"state_dict": {f"module.{k}": v for k, v in donor.video.state_dict().items()}}, tmp_path / "v.pth")
    model = build("msaf_ravdess_tiny", {}, 8)
    report = load_pretrained(model, {"video": str(tmp_path / "v.pth")})
    assert report["video"]["loaded"] == len(donor.video.state_dict()) and report["video"]["kept"] == 0
    for (k, a), b in zip(model.video.state_dict().items(), donor.video.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="unknown branch"):
        load_pretrained(model, {"vision": str(tmp_path / "v.pth")})
    with pytest.raises(DataError, match="no tensor of the file fits"):
        load_pretrained(model, {"audio": str(tmp_path / "v.pth")})
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(DataError, match="not a state dict"):
        load_pretrained(model, {"video": str(tmp_path / "tensor.pth")})
    broken = {k: v.clone() for k, v in donor.video.state_dict().items()}
    first = next(k for k, v in broken.items() if v.is_floating_point())
    broken[first].view(-1)[0] = float("nan")
    torch.save(broken, tmp_path / "nan.pth")
    with pytest.raises(DataError, match=f"non-finite weights .*key '{first}'"):
        load_pretrained(model, {"video": str(tmp_path / "nan.pth")})

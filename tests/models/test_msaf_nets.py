import pytest
import torch

from mmfusion.models import build, list_models


def test_clip_models_are_registered_apart_from_sequence_models():
    assert {"msaf_ravdess", "msaf_ntu", "resnext50", "mfccnet", "i3d", "hcn"} <= set(list_models(inputs="clips"))
    assert "msaf_ravdess" not in list_models(inputs="sequences")


def test_full_size_geometry_is_the_papers():
    ntu = build("msaf_ntu", {}, 60)
    assert ntu.rgb.channels_5b == 832 and ntu.rgb.channels_5c == 1024
    assert ntu.skeleton.person_channels == 128 and ntu.skeleton.fc_channels == 512
    assert ntu.msaf1.channels == [832, 128, 128] and ntu.msaf2.channels == [1024, 512]
    ravdess = build("msaf_ravdess", {}, 8)
    assert ravdess.msaf1.channels == [1024, 32] and ravdess.msaf2.channels == [2048, 64]
    assert ravdess.audio_fc.in_features == 1664  # 64 channels x 26 steps of 212 MFCC frames


def _fits_a_fixed_batch(model, feats, labels, steps=6):
    """A few Adam steps on one batch lower its loss (gradients reach every branch and the fusion blocks)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(feats, {})["pred"]
        loss = torch.nn.functional.cross_entropy(out, labels)
        opt.zero_grad()
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    assert losses[-1] < losses[0]
    return model


def test_ravdess_tiny_trains():
    model = build("msaf_ravdess_tiny", {}, 8, block_dropout=0.0)
    feats = {"video": torch.rand(2, 3, 8, 32, 32), "audio": torch.randn(2, 13, 64)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fits_a_fixed_batch(model, feats, torch.tensor([1, 5]))
    for name in ("video.conv1.weight", "audio.conv1.weight", "msaf1.steps.0.excite.0.weight",
                 "msaf2.steps.0.joint.0.weight", "video_fc.weight", "audio_fc.weight"):
        assert not torch.equal(before[name], model.state_dict()[name]), name
    assert model.msaf1.last_attention.shape[-1] == 8 and model.msaf2.last_attention.shape[-1] == 16


def test_ntu_tiny_trains_and_predicts_the_mean_of_its_branches():
    model = build("msaf_ntu_tiny", {}, 60)
    feats = {"rgb": torch.rand(2, 3, 8, 32, 32), "skeleton": torch.randn(2, 2, 3, 16, 25)}
    _fits_a_fixed_batch(model, feats, torch.tensor([0, 59]))
    out = model.eval()(feats)
    torch.testing.assert_close(out["pred"], (out["branches"]["rgb"] + out["branches"]["skeleton"]) / 2)
    with pytest.raises(ValueError, match="skeletons"):
        model(feats | {"skeleton": torch.randn(2, 2, 3, 32, 25)})


def test_the_persons_meet_only_after_conv6():
    """conv6 runs on each person, the maximum comes after it: not the same as conv6 of the maximum."""
    torch.manual_seed(0)
    model = build("msaf_ntu_tiny", {}, 60).eval()
    feats = {"skeleton": torch.randn(2, 2, 3, 16, 25)}
    with torch.no_grad():
        sk = model.skeleton
        h0, h1 = sk.person(feats["skeleton"][:, 0]), sk.person(feats["skeleton"][:, 1])
        assert not torch.allclose(sk.join(h0, h1), sk.fc7(sk.conv6(torch.maximum(h0, h1)).flatten(1)))


def test_old_style_pretrained_errors_still_name_the_branch(tmp_path):
    from mmfusion.errors import ConfigError, DataError
    from mmfusion.models import load_pretrained

    donor = build("msaf_ravdess_tiny", {}, 8)
    torch.save({"state_dict": {f"module.{k}": v for k, v in donor.video.state_dict().items()}}, tmp_path / "v.pth")
    model = build("msaf_ravdess_tiny", {}, 8)
    report = load_pretrained(model, {"video": str(tmp_path / "v.pth")})
    assert report["video"]["loaded"] == len(donor.video.state_dict()) and report["video"]["kept"] == []
    with pytest.raises(ConfigError, match="unknown branch"):
        load_pretrained(model, {"vision": str(tmp_path / "v.pth")})
    with pytest.raises(DataError, match="no tensor of the file fits|partial match"):
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

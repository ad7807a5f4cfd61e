"""The MSAF authors' networks and weights: random weights in a re-creation of each reference network
(tests/models/reference_msaf.py) -> saved in the reference's file layouts -> mmfusion's from_reference -> the same
logits in eval mode."""

import pytest
import torch

from mmfusion.errors import DataError
from mmfusion.models import build, from_reference
from tests.models.reference_msaf import (
    RefI3D,
    RefMFCCNet,
    RefMOSEINet,
    RefNTUNet,
    RefRavdessNet,
    RefResNeXt,
    RefSkeleton,
    randomize,
)

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1, 1)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def close(ours, ref):
    """Within 1e-4 of the reference logits, relative to their scale."""
    scale = max(float(ref.abs().max()), 1.0)
    torch.testing.assert_close(ours / scale, ref / scale, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def ravdess_ref():
    torch.manual_seed(0)
    # 16 frames of 64 x 64: layer4 is one position, as 30 x 224 x 224 gives one after the reference's 2 x 7 x 7 pool
    return randomize(RefRavdessNet(RefResNeXt(sample_size=64, sample_duration=16), RefMFCCNet()), seed=1)


def test_parameter_counts_are_the_papers_exactly(ravdess_ref):
    ours = build("msaf_ravdess", {}, 8)
    # 3-D ResNeXt-50 with an 8-class fc 25,882,056 + MFCC CNN 34,024 + MSAF1 5,356 + MSAF2 19,288 (paper: 25.94 M)
    assert n_params(ours) == n_params(ravdess_ref) == 25_940_724
    assert n_params(build("resnext50", {}, 8)) == n_params(RefResNeXt()) == 25_882_056
    assert n_params(build("mfccnet", {}, 8)) == n_params(RefMFCCNet()) == 34_024
    ntu = build("msaf_ntu", {}, 60)
    assert n_params(ntu.msaf1) == 19_568 and n_params(ntu.msaf2) == 116_416  # the paper's NTU MSAF blocks
    assert n_params(ntu.rgb) == n_params(RefI3D()) and n_params(ntu.skeleton) == n_params(RefSkeleton())
    mosei = build("msaf_lstm", {"text": 768, "vision": 35, "audio": 74}, 1)
    assert n_params(mosei) == n_params(RefMOSEINet())
    assert n_params(mosei.msaf) == 10_840


def _save_variants(state, tmp_path, stem):
    """The containers the reference scripts wrote: bare, under state_dict, with DataParallel's prefix."""
    files = {"bare": tmp_path / f"{stem}.pth", "state_dict": tmp_path / f"{stem}_sd.checkpoint",
             "module": tmp_path / f"{stem}_dp.pth"}
    torch.save(state, files["bare"])
    torch.save({"state_dict": state, "epoch": 12}, files["state_dict"])
    torch.save({f"module.{k}": v for k, v in state.items()}, files["module"])
    return files


def test_ravdess_logits_equal_the_reference(ravdess_ref, tmp_path):
    g = torch.Generator().manual_seed(2)
    video, audio = torch.rand(2, 3, 16, 64, 64, generator=g), torch.randn(2, 13, 212, generator=g)
    with torch.no_grad():
        want = ravdess_ref([(video - IMAGENET_MEAN) / IMAGENET_STD, audio])
        files = _save_variants(ravdess_ref.state_dict(), tmp_path, "fold_1_msaf_ravdess_best")
        for kind, path in files.items():
            model = from_reference("msaf_ravdess", path)
            assert not model.training, kind
            close(model({"video": video, "audio": audio})["pred"], want)
        # the stem without ReLU is what the released weights need: with it, this comparison fails
        model.video.stem_relu = True
        with pytest.raises(AssertionError):
            close(model({"video": video, "audio": audio})["pred"], want)


def test_unimodal_ravdess_branches_equal_the_reference(ravdess_ref, tmp_path):
    g = torch.Generator().manual_seed(3)
    video, audio = torch.rand(2, 3, 8, 32, 32, generator=g), torch.randn(2, 13, 212, generator=g)
    resnext = randomize(RefResNeXt(sample_size=32, sample_duration=8), seed=4)
    mfcc = randomize(RefMFCCNet(), seed=5)
    torch.save(resnext.state_dict(), tmp_path / "r.pth")
    torch.save(mfcc.state_dict(), tmp_path / "m.pth")
    with torch.no_grad():
        close(from_reference("resnext50", tmp_path / "r.pth")({"video": video})["pred"],
              resnext((video - IMAGENET_MEAN) / IMAGENET_STD))
        close(from_reference("mfccnet", tmp_path / "m.pth")({"audio": audio})["pred"], mfcc(audio))


@pytest.fixture(scope="module")
def ntu_ref():
    torch.manual_seed(0)
    # 16 frames of 64 x 64 (Mixed_5c maps 2 x 2 x 2, pooled whole as 4 x 7 x 7 maps are by the 2 x 7 x 7 pool over
    # sliding windows) and a 16-frame skeleton window
    return randomize(RefNTUNet(RefI3D(pool=(2, 2, 2)), RefSkeleton(window_size=16)), seed=6)


def test_ntu_logits_equal_the_reference(ntu_ref, tmp_path):
    g = torch.Generator().manual_seed(7)
    rgb, skeleton = torch.rand(2, 3, 16, 64, 64, generator=g), torch.randn(2, 2, 3, 16, 25, generator=g)
    with torch.no_grad():
        bgr = (rgb.flip(1) - IMAGENET_MEAN) / IMAGENET_STD  # the reference's OpenCV frames, normalised
        want = ntu_ref(bgr.permute(0, 2, 3, 4, 1), skeleton.permute(0, 2, 3, 4, 1))
        files = _save_variants(ntu_ref.state_dict(), tmp_path, "msaf_ntu_epoch12_92.24")
        for path in files.values():
            model = from_reference("msaf_ntu", path)
            out = model({"rgb": rgb, "skeleton": skeleton})
            close(out["pred"], want)
        assert out["branches"]["rgb"].shape == out["branches"]["skeleton"].shape == (2, 60)


def test_unimodal_ntu_branches_equal_the_reference(tmp_path):
    g = torch.Generator().manual_seed(8)
    rgb, skeleton = torch.rand(1, 3, 16, 64, 64, generator=g), torch.randn(2, 2, 3, 32, 25, generator=g)
    i3d, hcn = randomize(RefI3D(pool=(2, 2, 2)), seed=9), randomize(RefSkeleton(window_size=32), seed=10)
    torch.save(i3d.state_dict(), tmp_path / "i3d_32frames_85.63.checkpoint")
    torch.save(hcn.state_dict(), tmp_path / "skeleton_32frames_85.24.checkpoint")
    with torch.no_grad():
        close(from_reference("i3d", tmp_path / "i3d_32frames_85.63.checkpoint")({"rgb": rgb})["pred"],
              i3d((rgb.flip(1) - IMAGENET_MEAN) / IMAGENET_STD))
        model = from_reference("hcn", tmp_path / "skeleton_32frames_85.24.checkpoint")
        close(model({"skeleton": skeleton})["pred"], hcn(skeleton.permute(0, 2, 3, 4, 1)))


def test_mosei_logits_equal_the_reference(tmp_path):
    ref = randomize(RefMOSEINet(), seed=11)
    g = torch.Generator().manual_seed(12)
    x = {"vision": torch.randn(3, 22, 35, generator=g), "audio": torch.randn(3, 22, 74, generator=g),
         "text": torch.randn(3, 22, 768, generator=g)}
    masks = {m: torch.ones(3, 22, dtype=torch.bool) for m in x}
    # the script's container: weights under model_state_dict beside NumPy scores
    import numpy as np

    torch.save({"epoch": 6, "model_state_dict": ref.state_dict(), "test_score": [np.float64(0.5)]},
               tmp_path / "msaf_mosei_epoch6.pth")
    with torch.no_grad():
        want = ref([x["vision"], x["audio"], x["text"]])
        model = from_reference("msaf_lstm", tmp_path / "msaf_mosei_epoch6.pth")
        close(model(x, masks)["pred"], want)


def test_missing_extra_and_misshaped_tensors_are_refused_by_name(tmp_path):
    state = randomize(RefSkeleton(window_size=32), seed=13).state_dict()
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "conv5.0.weight"}, "not in the file", "conv5.0.weight"),
        "extra": (state | {"fc9.weight": torch.zeros(3, 3)}, "no place in hcn", "fc9.weight"),
        "misshaped": (state | {"conv3.0.weight": torch.zeros(32, 25, 5, 5)}, "wrong shape", "conv3.0.weight"),
    }
    for kind, (bad, says, key) in cases.items():
        path = tmp_path / f"{kind}.pth"
        torch.save(bad, path)
        with pytest.raises(DataError, match=says) as err:
            from_reference("hcn", path)
        assert key in str(err.value) and str(path) in str(err.value), kind
    assert "(32, 25, 3, 3)" in str(pytest.raises(DataError, from_reference, "hcn", tmp_path / "misshaped.pth").value)
    # a file of another network: its keys are named
    torch.save(randomize(RefMFCCNet(), seed=14).state_dict(), tmp_path / "mfcc.pth")
    with pytest.raises(DataError, match="not a hcn state dict.*fc8.weight"):
        from_reference("hcn", tmp_path / "mfcc.pth")
    torch.save({"state_dict": {"w": 3}}, tmp_path / "odd.pth")
    with pytest.raises(DataError, match="not tensors"):
        from_reference("hcn", tmp_path / "odd.pth")


def test_mosei_reference_padding_reads_padded_steps_as_the_authors_did(tmp_path):
    """The authors run their LSTMs over the zero-padded sequences: with ``reference_padding`` (which the import
    sets) the masks are ignored and padded inputs give their logits; by default the padding is left out, which
    changes the padded rows only."""
    from mmfusion.models import build

    ref = randomize(RefMOSEINet(), seed=13)
    torch.save(ref.state_dict(), tmp_path / "msaf_mosei_epoch6.pth")
    g = torch.Generator().manual_seed(14)
    lengths = torch.tensor([22, 15, 9])
    real = torch.arange(22)[None, :] < lengths[:, None]  # (3, 22), True = real step
    x = {m: torch.randn(3, 22, d, generator=g) * real[..., None] for m, d in (("vision", 35), ("audio", 74),
                                                                             ("text", 768))}
    masks = {m: real for m in x}
    imported = from_reference("msaf_lstm", tmp_path / "msaf_mosei_epoch6.pth")
    assert imported.config.reference_padding
    default = build("msaf_lstm", {"text": 768, "vision": 35, "audio": 74}, 1).eval()
    assert not default.config.reference_padding
    default.load_state_dict(imported.state_dict())
    with torch.no_grad():
        want = ref([x["vision"], x["audio"], x["text"]])
        close(imported(x, masks)["pred"], want)
        aware = default(x, masks)["pred"]
    close(aware[:1], want[:1])  # the full-length row is the same either way
    assert (aware[1:] - want[1:]).abs().min() > 1e-3  # the padded rows are not read as real by default

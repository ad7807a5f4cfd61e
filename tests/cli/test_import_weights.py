"""`mmfusion import-weights` and `mmfusion test` over a folder of the authors' fold checkpoints; `--pretrained`
from their unimodal files, refusing a partial match unless asked."""

import csv
import json

import numpy as np
import pytest
import torch

from mmfusion.cli.main import main
from mmfusion.data import FusionDataset, load_data
from mmfusion.engine.checkpoints import load_system
from tests.data.test_clips import ravdess_dir  # noqa: F401  (the RAVDESS fixture in the real layout)
from tests.models.reference_msaf import RefMFCCNet, RefRavdessNet, RefResNeXt, RefSkeleton, randomize

MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1, 1)


def test_imported_fold_checkpoints_give_the_reference_logits_and_cv_table(ravdess_dir, tmp_path):  # noqa: F811
    refs = {k: randomize(RefRavdessNet(RefResNeXt(sample_size=32, sample_duration=8), RefMFCCNet()), seed=k)
            for k in (1, 2)}
    torch.save({"state_dict": refs[1].state_dict()}, tmp_path / "fold_1_msaf_ravdess_best.pth")
    torch.save({f"module.{k}": v for k, v in refs[2].state_dict().items()}, tmp_path / "fold_2_msaf_ravdess_best.pth")
    folder = tmp_path / "imported"
    for k in (1, 2):
        assert main(["import-weights", "msaf_ravdess", str(tmp_path / f"fold_{k}_msaf_ravdess_best.pth"),
                     "--out", str(folder / f"fold_{k}.ckpt")]) == 0
    assert main(["test", "--ckpt", str(folder), "--data", f"ravdess:{ravdess_dir}", "--set", "frames=8",
                 "--set", "size=32"]) == 0
    summary = json.loads((folder / "test_folds.json").read_text())
    accs = []
    for k in (1, 2):
        bundle = load_data(f"ravdess:{ravdess_dir}", {"frames": 8, "size": 32, "fold": k - 1})
        split = bundle.splits["test"]
        batch = FusionDataset(split).collate(list(range(len(split))))
        with torch.no_grad():
            want = refs[k]([(batch.features["video"] - MEAN) / STD, batch.features["audio"]])
            got = load_system(folder / f"fold_{k}.ckpt").model(batch.features, batch.masks)["pred"]
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
        rows = list(csv.DictReader(open(folder / f"test_ravdess_fold{k - 1}.predictions.csv")))
        assert [r["id"] for r in rows] == list(batch.ids)  # fold K of the authors is our fold K - 1
        assert [int(r["prediction"]) for r in rows] == want.argmax(-1).tolist()
        acc = float((want.argmax(-1) == batch.labels).float().mean())
        assert summary["folds"][str(k)]["acc"] == pytest.approx(acc)
        accs.append(acc)
    assert summary["metrics"]["acc"]["mean"] == pytest.approx(np.mean(accs))
    assert summary["metrics"]["acc"]["std"] == pytest.approx(np.std(accs, ddof=1))


def test_import_weights_refuses_a_file_that_does_not_fit(tmp_path, capsys):
    state = randomize(RefSkeleton(window_size=32), seed=1).state_dict()
    del state["fc7.0.bias"]
    torch.save(state, tmp_path / "skeleton.checkpoint")
    assert main(["import-weights", "hcn", str(tmp_path / "skeleton.checkpoint"), "--out",
                 str(tmp_path / "x.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "fc7.0.bias" in err and "(512,)" in err and not (tmp_path / "x.ckpt").exists()


def test_pretrained_reads_the_authors_unimodal_files_and_refuses_partial_matches(tmp_path):
    from mmfusion.errors import DataError
    from mmfusion.models import build, load_pretrained

    resnext = randomize(RefResNeXt(), seed=3)
    mfcc = randomize(RefMFCCNet(), seed=4)
    torch.save(resnext.state_dict(), tmp_path / "fold_1_resnext50_best.pth")
    torch.save({"state_dict": mfcc.state_dict()}, tmp_path / "fold_1_mfccNet_best.pth")
    model = build("msaf_ravdess", {}, 8)
    report = load_pretrained(model, {"video": str(tmp_path / "fold_1_resnext50_best.pth"),
                                     "audio": str(tmp_path / "fold_1_mfccNet_best.pth")})
    assert report["video"]["read_as"] == "the reference resnext50 file" and report["video"]["kept"] == []
    assert torch.equal(model.video.conv1.weight, resnext.conv1.weight)  # the stem too (it used to stay random)
    assert torch.equal(model.video.layer4[2].bn3.running_var, resnext.layer4[2].bn3.running_var)
    assert torch.equal(model.video_fc.weight, resnext.fc.weight)  # the unimodal classifier initialises the head
    assert torch.equal(model.audio.conv3.weight, mfcc.conv3.weight) and torch.equal(model.audio_fc.bias, mfcc.fc1.bias)

    partial = {k: v for k, v in resnext.state_dict().items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    fresh = build("msaf_ravdess", {}, 8)
    with pytest.raises(DataError, match="partial match .*--pretrained-partial") as err:
        load_pretrained(fresh, {"video": str(tmp_path / "partial.pth")})
    assert "video.layer4.0.conv1.weight" in str(err.value)
    report = load_pretrained(fresh, {"video": str(tmp_path / "partial.pth")}, partial=True)
    assert report["video"]["kept"] and all(k.startswith("video.layer4.") for k in report["video"]["kept"])
    assert torch.equal(fresh.video.layer3[0].conv1.weight, resnext.layer3[0].conv1.weight)


def test_pretrained_model_loads_an_imported_checkpoint(tmp_path):
    from mmfusion.models import build, load_pretrained

    hcn = randomize(RefSkeleton(window_size=32), seed=5)
    torch.save(hcn.state_dict(), tmp_path / "skeleton_32frames_85.24.checkpoint")
    assert main(["import-weights", "hcn", str(tmp_path / "skeleton_32frames_85.24.checkpoint"), "--out",
                 str(tmp_path / "hcn.ckpt")]) == 0
    model = build("hcn", {"skeleton": 25}, 60)
    report = load_pretrained(model, {"model": str(tmp_path / "hcn.ckpt")})
    assert report["model"]["kept"] == [] and torch.equal(model.skeleton.fc8.weight, hcn.fc8.weight)


def test_ntu_and_mosei_through_import_weights(tmp_path):
    """The fused NTU network through import-weights and `mmfusion test` on NTU files in the real layout, and the
    MOSEI network through import-weights: the reference's logits."""
    from tests.data.test_clips import _skeleton_text, write_clip
    from tests.models.reference_msaf import RefI3D, RefMOSEINet, RefNTUNet

    root = tmp_path / "NTU"
    root.mkdir()
    for k, subject in enumerate((1, 3, 6)):
        stem = f"S001C001P{subject:03d}R001A{k + 1:03d}"
        (root / f"{stem}.skeleton").write_text(_skeleton_text(frames=12, seed=k))
        write_clip(root / f"{stem}_rgb.avi", frames=10, container="avi", seed=k)
    ref = randomize(RefNTUNet(RefI3D(pool=(2, 2, 2)), RefSkeleton(window_size=16)), seed=21)
    torch.save(ref.state_dict(), tmp_path / "msaf_ntu_epoch12_92.24.checkpoint")
    ckpt = tmp_path / "ntu.ckpt"
    assert main(["import-weights", "msaf_ntu", str(tmp_path / "msaf_ntu_epoch12_92.24.checkpoint"), "--out",
                 str(ckpt)]) == 0
    options = {"frames": 16, "size": 64, "skeleton_frames": 16}
    assert main(["test", "--ckpt", str(ckpt), "--data", f"ntu:{root}"] + [f"--set={k}={v}" for k, v in
                                                                         options.items()]) == 0
    split = load_data(f"ntu:{root}", options).splits["test"]
    batch = FusionDataset(split).collate(list(range(len(split))))
    bgr = (batch.features["rgb"].flip(1) - MEAN) / STD
    with torch.no_grad():
        want = ref(bgr.permute(0, 2, 3, 4, 1), batch.features["skeleton"].permute(0, 2, 3, 4, 1))
        got = load_system(ckpt).model(batch.features, batch.masks)["pred"]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * max(1.0, float(want.abs().max())))
    rows = list(csv.DictReader(open(tmp_path / "test_ntu_xsub.predictions.csv")))
    assert [int(r["prediction"]) for r in rows] == want.argmax(-1).tolist()
    metrics = json.loads((tmp_path / "test_ntu_xsub.metrics.json").read_text())
    assert metrics["acc"] == pytest.approx(float((want.argmax(-1) == batch.labels).float().mean()))

    mosei = randomize(RefMOSEINet(), seed=22)
    torch.save({"epoch": 6, "model_state_dict": mosei.state_dict()}, tmp_path / "msaf_mosei_epoch6.pth")
    assert main(["import-weights", "msaf_lstm", str(tmp_path / "msaf_mosei_epoch6.pth"), "--out",
                 str(tmp_path / "mosei.ckpt")]) == 0
    system = load_system(tmp_path / "mosei.ckpt")
    assert system.hparams["task"] == "regression"
    assert dict(system.hparams["feature_dims"]) == {"vision": 35, "audio": 74, "text": 768}
    x = {"vision": torch.randn(2, 20, 35), "audio": torch.randn(2, 20, 74), "text": torch.randn(2, 20, 768)}
    with torch.no_grad():
        got = system.model(x, {m: torch.ones(2, 20, dtype=torch.bool) for m in x})["pred"]
        torch.testing.assert_close(got, mosei([x["vision"], x["audio"], x["text"]]), rtol=0, atol=1e-4)


def _ntu_skeletons(root, subjects):
    from tests.data.test_clips import _skeleton_text, write_clip

    root.mkdir()
    for k, subject in enumerate(subjects):
        stem = f"S001C001P{subject:03d}R001A{k % 3 + 1:03d}"
        (root / f"{stem}.skeleton").write_text(_skeleton_text(frames=12, seed=k))
        write_clip(root / f"{stem}_rgb.avi", frames=4, container="avi", seed=k)


def test_fit_resume_from_an_imported_checkpoint_starts_from_its_weights(tmp_path, capsys):
    """`fit --resume CKPT` with an import-weights checkpoint: the run starts from its weights with a fresh optimiser
    at epoch 0 (the file has no training state); another network, or --pretrained beside it, is one clear error."""
    hcn = randomize(RefSkeleton(window_size=16), seed=7)
    torch.save(hcn.state_dict(), tmp_path / "skeleton.checkpoint")
    ckpt = tmp_path / "hcn.ckpt"
    assert main(["import-weights", "hcn", str(tmp_path / "skeleton.checkpoint"), "--out", str(ckpt)]) == 0
    root = tmp_path / "NTU"
    _ntu_skeletons(root, (1, 4, 2, 3, 6))  # training subjects 1 and 4, validation 2, test 3 and 6
    common = ["fit", "--data", f"ntu:{root}", "--set", "data_args.skeleton_frames=16", "--max-epochs", "1",
              "--batch-size", "2", "--threads", "1", "--no-progress", "--set", "train.patience=0", "--out",
              str(tmp_path / "runs")]
    assert main(common + ["--model", "hcn", "--set", "model_args.skeleton_frames=16", "--set", "train.lr=1e-9",
                          "--resume", str(ckpt)]) == 0
    (record,) = (tmp_path / "runs").rglob("pretrained.json")
    report = json.loads(record.read_text())
    assert report["files"] == {"model": str(ckpt)} and report["branches"]["model"]["kept"] == []
    last = torch.load(record.parent / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 1  # one epoch of one batch, counted from 0
    steps = {int(v["step"]) for v in last["optimizer_states"][0]["state"].values()}
    assert steps == {1}  # a fresh optimiser: only this run's step
    trained = load_system(record.parent / "checkpoints" / "last.ckpt").model
    torch.testing.assert_close(trained.skeleton.fc8.weight, hcn.fc8.weight, rtol=0, atol=1e-6)  # lr 1e-9
    torch.testing.assert_close(trained.skeleton.conv1[0].weight, hcn.conv1[0].weight, rtol=0, atol=1e-6)

    # the same command again, one epoch longer: the run goes on from its own last checkpoint, not from CKPT
    longer = [a if a != "1" else "2" for a in common]
    assert main(longer + ["--model", "hcn", "--set", "model_args.skeleton_frames=16", "--set", "train.lr=1e-9",
                          "--resume", str(ckpt)]) == 0
    metrics = json.loads((record.parent / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 0 and metrics["epochs_run"] == 2  # went on after epoch 0
    last = torch.load(record.parent / "checkpoints" / "last.ckpt", weights_only=True)
    assert {int(v["step"]) for v in last["optimizer_states"][0]["state"].values()} == {2}

    capsys.readouterr()
    assert main(common + ["--model", "msaf_ntu_tiny", "--out", str(tmp_path / "other"), "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "another network" in err and "'hcn'" in err and "msaf_ntu_tiny" in err
    assert main(common + ["--model", "hcn", "--resume", str(ckpt), "--pretrained", "skeleton=x.pth"]) == 2
    assert "cannot be combined with --pretrained" in capsys.readouterr().err

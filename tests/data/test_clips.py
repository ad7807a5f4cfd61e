"""RAVDESS and NTU RGB+D readers on fixture files written in the real layouts (PyAV), and MSAF's networks on them."""

import json

import av
import numpy as np
import pytest
import torch
import yaml

from mmfusion.cli.main import main
from mmfusion.data import FusionDataset, load_data
from mmfusion.data.clips import read_skeleton
from mmfusion.errors import DataError


def write_clip(path, frames=12, size=(48, 64), audio_seconds=0.0, container="mp4", seed=0):
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as box:
        v = box.add_stream("mpeg4", rate=15)
        v.width, v.height, v.pix_fmt = size[1], size[0], "yuv420p"
        a = None
        if audio_seconds:
            a = box.add_stream("aac" if container == "mp4" else "mp2", rate=44100)
            a.layout = "mono"
        for i in range(frames):
            img = (rng.random((size[0], size[1], 3)) * 255).astype(np.uint8)
            img[:, : 4 + i] = 255
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                box.mux(pkt)
        for pkt in v.encode():
            box.mux(pkt)
        if a is not None:
            t = np.arange(int(44100 * audio_seconds)) / 44100
            wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            step = a.codec_context.frame_size or 1024
            for k in range(0, len(wave), step):
                chunk = wave[k:k + step]
                if len(chunk) < step:
                    chunk = np.pad(chunk, (0, step - len(chunk)))
                fr = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
                fr.sample_rate = 44100
                fr.pts = k
                for pkt in a.encode(fr):
                    box.mux(pkt)
            for pkt in a.encode():
                box.mux(pkt)


def openface_csv(path, boxes, zero_rows=()):
    """A landmark CSV as the RAVDESS FacialTracking archive holds them: OpenFace columns with a space after each
    comma (" x_0"), one row per frame, all-zero rows where tracking failed. ``boxes``: per frame (x0, y0, x1, y1)."""
    header = ["frame", "face_id", "timestamp", "confidence", "success"] + [f"x_{i}" for i in range(68)] + [
        f"y_{i}" for i in range(68)]
    rows = []
    for f, (x0, y0, x1, y1) in enumerate(boxes):
        xs = np.linspace(x0, x1, 68)
        ys = np.linspace(y0, y1, 68)[::-1]
        vals = [f + 1, 0, f / 30, 0.98, 1, *xs, *ys]
        if f in zero_rows:
            vals = [f + 1, 0, f / 30, 0, 0] + [0] * 136
        rows.append(", ".join(str(round(v, 3)) for v in vals))
    path.write_text(", ".join(header) + "\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def ravdess_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("RAVDESS")
    (root / "landmarks").mkdir()
    for actor in range(1, 25):
        d = root / f"Actor_{actor:02d}"
        d.mkdir()
        emotion = actor % 8 + 1
        name = f"01-01-{emotion:02d}-01-01-01-{actor:02d}"
        write_clip(d / f"{name}.mp4", audio_seconds=1.2, seed=actor)
        (d / f"02-01-{emotion:02d}-01-01-01-{actor:02d}.mp4").write_bytes(b"video-only files are skipped")
        openface_csv(root / "landmarks" / f"{name}.csv", [(8, 6, 40, 38)] * 12, zero_rows=(3, 4) if actor == 2 else ())
    # one landmark CSV beside its clip (68 points in a 20x20 box at the top left)
    lm = {f"x_{i}": 5 + (i % 20) for i in range(68)} | {f"y_{i}": 5 + (i % 20) for i in range(68)}
    header = ",".join(["frame"] + list(lm))
    rows = [",".join([str(f)] + [str(v) for v in lm.values()]) for f in range(12)]
    (root / "Actor_01" / "01-01-02-01-01-01-01.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_landmark_crop_follows_the_face(ravdess_dir):
    from mmfusion.data.clips import crop_box, read_landmarks

    frames = [np.zeros((48, 64, 3), np.uint8)]
    lm = read_landmarks(ravdess_dir / "Actor_01" / "01-01-02-01-01-01-01.csv", np.array([0]))
    top, left, h, w = crop_box(frames, lm)
    assert (top, left) == (3, 3) and h == w == 22  # the 19x19 landmark box with a 20 % margin
    assert crop_box(frames, None) == (0, 8, 48, 48)  # centred square otherwise


def test_ravdess_reader_folds_crops_and_mfccs(ravdess_dir):
    bundle = load_data(f"ravdess:{ravdess_dir}", {"frames": 6, "size": 32, "fold": 1})
    assert bundle.task == "classification" and bundle.output_dim == 8
    assert [len(bundle.splits[s]) for s in ("train", "valid", "test")] == [16, 4, 4]
    test_actors = {int(i[-2:]) for i in bundle.splits["test"].ids}
    assert test_actors == {5, 6, 7, 8}
    assert {int(i[-2:]) for i in bundle.splits["valid"].ids} == {9, 10, 11, 12}
    batch = FusionDataset(bundle.splits["train"]).collate([0, 1])
    assert batch.features["video"].shape == (2, 3, 6, 32, 32) and batch.features["audio"].shape == (2, 13, 212)
    assert 0.0 <= float(batch.features["video"].min()) and float(batch.features["video"].max()) <= 1.0
    assert batch.labels.tolist() == [int(i.split("-")[2]) - 1 for i in batch.ids]
    assert float(batch.features["audio"].abs().sum()) > 0


def test_interrupted_prepare_goes_on_where_it_stopped(ravdess_dir, monkeypatch):
    """A decode that dies at clip 10 keeps clips 1-9; the next call decodes only the rest, and the cache equals one
    written in a single go."""
    import shutil

    from mmfusion.data import clips

    settings = {"frames": 4, "size": 16}  # a cache of its own, beside the other tests'
    cache = clips.prepare_ravdess(ravdess_dir, **settings)
    whole = {k: np.load(cache / f"{k}.npy") for k in ("video", "audio", "labels", "actors")}
    shutil.rmtree(cache)

    class Killed(Exception):
        pass

    real, calls, resumed = clips._video_clip, [], False

    def dies_at_ten(path, *args):
        calls.append(path.stem)
        if len(calls) == 10 and not resumed:
            raise Killed
        return real(path, *args)

    monkeypatch.setattr(clips, "_video_clip", dies_at_ten)
    with pytest.raises(Killed):
        clips.prepare_ravdess(ravdess_dir, **settings)
    assert not (cache / "done.json").exists()
    assert json.loads((cache / "progress.json").read_text())["done"] == 9

    calls.clear()
    resumed = True
    assert clips.prepare_ravdess(ravdess_dir, **settings) == cache
    assert len(calls) == 24 - 9 and (cache / "done.json").exists() and not (cache / "progress.json").exists()
    for k, expected in whole.items():
        np.testing.assert_array_equal(np.load(cache / f"{k}.npy"), expected, err_msg=k)


def test_fold_all_cross_validates_over_the_six_actor_folds(ravdess_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["fit", "--model", "msaf_ravdess_tiny", "--data", f"ravdess:{ravdess_dir}", "--set", "data_args.fold=all",
            "--set", "data_args.frames=6", "--set", "data_args.size=32", "--set", "model_args.mfcc_frames=212",
            "--max-epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    folds = [json.loads((out / f"msaf_ravdess_tiny/ravdess_fold{k}/seed_1111/metrics.json").read_text())
             for k in range(6)]
    tested = [yaml.safe_load((out / f"msaf_ravdess_tiny/ravdess_fold{k}/seed_1111/config.yaml").read_text())
              ["data_args"]["fold"] for k in range(6)]
    assert tested == list(range(6))
    cv = json.loads((out / "msaf_ravdess_tiny/ravdess_cv/summary.json").read_text())
    accs = [f["acc"] for f in folds]
    assert cv["folds"] == list(range(6)) and [p["acc"]["mean"] for p in cv["per_fold"]] == accs
    assert cv["metrics"]["acc"]["mean"] == pytest.approx(np.mean(accs))
    assert cv["metrics"]["acc"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert "mean over folds" in (out / "msaf_ravdess_tiny/ravdess_cv/summary.md").read_text()
    assert main(args + ["--resume"]) == 0  # every fold is reused, nothing retrains
    assert json.loads((out / "msaf_ravdess_tiny/ravdess_cv/summary.json").read_text())["metrics"] == cv["metrics"]


def test_a_fold_that_is_not_a_fold_is_a_clear_error(ravdess_dir):
    for bad in ("all", 6, "2"):
        with pytest.raises(DataError, match="fold") as err:
            load_data(f"ravdess:{ravdess_dir}", {"fold": bad, "frames": 6, "size": 32})
        assert "0..5" in str(err.value)


def _recomputed_test_accuracy(run, data, options):
    """The test accuracy of the run's best checkpoint, recomputed here from its logits on the test split."""
    import torch

    from mmfusion.engine.checkpoints import load_system

    split = load_data(data, options).splits["test"]
    batch = FusionDataset(split).collate(list(range(len(split))))
    with torch.no_grad():
        pred = load_system(run / "checkpoints" / "best.ckpt").model(batch.features, batch.masks)["pred"]
    return float((pred.argmax(-1) == batch.labels).float().mean())


@pytest.mark.parametrize("model", ["msaf_ravdess"])
def test_msaf_ravdess_fits_end_to_end(ravdess_dir, tmp_path, model):
    """The full-size network (25.94 M parameters) too, on small frames so that it fits a CPU test; the reported test
    accuracy is the best checkpoint's on fold 0's test actors."""
    out = tmp_path / "runs"
    assert main(["fit", "--model", model, "--data", f"ravdess:{ravdess_dir}", "--set",
                 "data_args.frames=6", "--set", "data_args.size=32", "--set", "model_args.mfcc_frames=212",
                 "--max-epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(out)]) == 0
    run = next(out.glob(f"{model}/*/seed_1111"))
    metrics = json.loads((run / "metrics.json").read_text())
    want = _recomputed_test_accuracy(run, f"ravdess:{ravdess_dir}", {"frames": 6, "size": 32, "fold": 0})
    assert metrics["acc"] == pytest.approx(want) and "f1" in metrics


def _skeleton_text(frames=10, bodies=2, seed=0, ids=None, offset=0.0):
    """An NTU .skeleton file; ``ids``: per frame the body IDs present (default: ``bodies`` bodies in every frame).
    Body k's joints lie around x = 10·(k + 1) + offset, so that tests can tell the bodies apart."""
    rng = np.random.default_rng(seed)
    ids = ids or [list(range(bodies))] * frames
    lines = [str(len(ids))]
    for present in ids:
        lines.append(str(len(present)))
        for b in present:
            lines.append(f"72057594037{b} 0 1 1 1 1 0 0.1 0.2 2")
            lines.append("25")
            for _ in range(25):
                x, y, z = rng.normal(size=3) * 0.1 + [10 * (b + 1) + offset, 0, 0]
                lines.append(f"{x:.4f} {y:.4f} {z:.4f} 250.1 200.2 1000.3 500.4 0.1 0.2 0.3 0.4 2")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def ntu_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("NTU")
    for k, subject in enumerate((1, 2, 35, 3, 6)):  # two training subjects, one validation, two test
        stem = f"S001C001P{subject:03d}R001A{k + 1:03d}"
        (root / f"{stem}.skeleton").write_text(_skeleton_text(frames=8 + k, bodies=1 + k % 2, seed=k))
        write_clip(root / f"{stem}_rgb.avi", frames=10, container="avi", seed=k)
    return root


def test_skeleton_parser(ntu_dir, tmp_path):
    sk = read_skeleton(ntu_dir / "S001C001P001R001A001.skeleton")
    assert sk.shape == (2, 3, 8, 25) and not sk[1].any()  # one body: the second person is zero
    bad = tmp_path / "S001C001P001R001A001.skeleton"
    bad.write_text("5\n1\n")
    with pytest.raises(DataError, match="malformed skeleton"):
        read_skeleton(bad)
    good = (ntu_dir / "S001C001P001R001A001.skeleton").read_text().split("\n")
    first_joint = 4  # frame count, body count, body info, joint count, then the joints
    for line, says in (("0.1", "malformed skeleton"),  # one coordinate would be broadcast to x, y and z
                       ("nan 0.2 0.3", "NaN or inf")):
        bad.write_text("\n".join(good[:first_joint] + [line] + good[first_joint + 1:]))
        with pytest.raises(DataError, match=says):
            read_skeleton(bad)


def test_a_landmark_csv_with_a_bad_cell_is_named(tmp_path):
    from mmfusion.data.clips import read_landmarks

    header = ",".join([f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)])
    row = ",".join(["1.0"] * 136)
    for bad_row, says in ((",".join(["1.0"] * 135 + ["n/a"]), "non-numeric"),
                          (",".join(["1.0"] * 135 + ["nan"]), "NaN or inf")):
        csv_path = tmp_path / "landmarks.csv"
        csv_path.write_text(f"{header}\n{row}\n{bad_row}\n")
        with pytest.raises(DataError, match=says) as err:
            read_landmarks(csv_path, np.arange(2))
        assert "landmarks.csv" in str(err.value)


@pytest.mark.parametrize("model", ["msaf_ntu_tiny", "msaf_ntu"])
def test_msaf_ntu_fits_end_to_end(ntu_dir, tmp_path, model):
    options = {"frames": 8, "size": 32, "skeleton_frames": 16}
    bundle = load_data(f"ntu:{ntu_dir}", options)
    subjects = {s: {int(i[9:12]) for i in bundle.splits[s].ids} for s in ("train", "valid", "test")}
    assert subjects == {"train": {1, 35}, "valid": {2}, "test": {3, 6}}  # cross-subject; 2, 5, 9, 14 validate
    out = tmp_path / "runs"
    assert main(["fit", "--model", model, "--data", f"ntu:{ntu_dir}", "--set", "data_args.frames=8",
                 "--set", "data_args.size=32", "--set", "data_args.skeleton_frames=16",
                 "--set", "model_args.skeleton_frames=16", "--max-epochs", "1",
                 "--batch-size", "2", "--no-progress", "--out", str(out)]) == 0
    run = next(out.glob(f"{model}/*/seed_1111"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["acc"] == pytest.approx(_recomputed_test_accuracy(run, f"ntu:{ntu_dir}", options))


def test_data_command_describes_clip_datasets(ravdess_dir, capsys, tmp_path):
    """Clip data has no frame lengths: `mmfusion data` prints each split's clip shape instead."""
    assert main(["data", f"ravdess:{ravdess_dir}", "--set", "frames=4", "--set", "size=32",
                 "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "clip shape 3x4x32x32" in out
    info = json.loads((tmp_path / "d.json").read_text())
    assert info["splits"]["train"]["shapes"]["video"] == [3, 4, 32, 32]


def test_the_authors_face_crop_follows_each_frames_landmarks(tmp_path):
    """Frames whose pixels encode their position: the crop of a landmark box holds exactly that box's pixels."""
    from mmfusion.data.clips import _face_crops, read_landmarks

    H, W = 48, 64
    ys, xs = np.mgrid[0:H, 0:W]
    img = np.stack([xs * 4, ys * 5, np.zeros_like(xs)], -1).astype(np.uint8)
    openface_csv(tmp_path / "lm.csv", [(16, 12, 48, 36), (0, 0, 32, 24), (16, 12, 48, 36)], zero_rows=(2,))
    lm = read_landmarks(tmp_path / "lm.csv")
    assert lm.shape == (3, 68, 2) and np.array_equal(lm[2], lm[1])  # the untracked row takes its neighbour's
    crops = _face_crops([img, img, img], lm, 32).astype(int)
    assert crops.shape == (3, 32, 32, 3)
    assert 60 <= crops[0, ..., 0].min() and crops[0, ..., 0].max() <= 196  # x in [16, 48] -> 64..192
    assert 55 <= crops[0, ..., 1].min() and crops[0, ..., 1].max() <= 185  # y in [12, 36] -> 60..180
    assert crops[1, ..., 0].max() <= 132 and crops[1, ..., 1].max() <= 125  # the second frame's own box
    assert read_landmarks(tmp_path / "none.csv") is None


def test_a_clip_without_landmarks_is_an_error_unless_centre_crop_is_asked(ravdess_dir, tmp_path):
    import shutil

    root = tmp_path / "RAVDESS"
    shutil.copytree(ravdess_dir, root, ignore=shutil.ignore_patterns(".mmfusion_cache"))
    gone = root / "landmarks" / "01-01-06-01-01-01-05.csv"
    gone.unlink()
    with pytest.raises(DataError, match="no landmark CSV .*crop=center") as err:
        load_data(f"ravdess:{root}", {"frames": 4, "size": 16})
    assert "01-01-06-01-01-01-05" in str(err.value)
    bundle = load_data(f"ravdess:{root}", {"frames": 4, "size": 16, "crop": "center"})
    assert any("1 clip(s) without landmarks centre-cropped" in n for n in bundle.report.notes)
    assert any("2 untracked (all-zero) landmark rows" in n for n in bundle.report.notes)


def test_the_cache_follows_settings_and_landmark_files(ravdess_dir, tmp_path):
    import shutil

    from mmfusion.data.clips import prepare_ravdess

    root = tmp_path / "RAVDESS"
    shutil.copytree(ravdess_dir, root, ignore=shutil.ignore_patterns(".mmfusion_cache"))
    first = prepare_ravdess(root, frames=4, size=16)
    assert prepare_ravdess(root, frames=4, size=16) == first  # reused
    assert prepare_ravdess(root, frames=4, size=16, crop="center") != first  # another setting
    lm = root / "landmarks" / "01-01-02-01-01-01-01.csv"
    openface_csv(lm, [(0, 0, 20, 20)] * 12)
    again = prepare_ravdess(root, frames=4, size=16)
    assert again != first
    assert not np.array_equal(np.load(again / "video.npy")[0], np.load(first / "video.npy")[0])


def test_training_augmentation_only_in_training_batches(ravdess_dir):
    bundle = load_data(f"ravdess:{ravdess_dir}", {"frames": 4, "size": 16, "fold": 0})
    train = bundle.splits["train"]
    plain = FusionDataset(train).collate([0, 1]).features["video"]
    augmented = FusionDataset(train, augment=True).collate([0, 1]).features["video"]
    assert augmented.shape == plain.shape and not torch.allclose(augmented, plain)
    valid = bundle.splits["valid"]
    assert valid.augment is None
    torch.testing.assert_close(FusionDataset(valid, augment=True).collate([0]).features["video"],
                               FusionDataset(valid).collate([0]).features["video"])
    off = load_data(f"ravdess:{ravdess_dir}", {"frames": 4, "size": 16, "fold": 0, "augment": False})
    assert off.splits["train"].augment is None


def test_skeleton_slots_follow_body_ids_and_bad_files_are_named(tmp_path):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    # body 1 is missing in frame 2, then body 0 leaves and a new body 2 enters
    path.write_text(_skeleton_text(ids=[[0, 1], [0], [0, 1], [1, 2]]))
    sk = read_skeleton(path)
    assert sk.shape == (2, 3, 4, 25)
    x = sk[:, 0].mean(-1)  # (slot, frame) mean x: body k sits at 10 (k + 1)
    assert x[0, :3] == pytest.approx([10, 10, 10], abs=0.2) and x[1].tolist()[:1] == pytest.approx([20], abs=0.2)
    assert x[1, 1] == 0 and x[1, 2] == pytest.approx(20, abs=0.2)  # slot 1 stays body 1's, empty while it is away
    assert x[1, 3] == pytest.approx(20, abs=0.2) and x[0, 3] == pytest.approx(30, abs=0.2)  # body 2 takes slot 0
    for text, says in (("0\n", "no frames"), (_skeleton_text(ids=[[0, 1, 2]]), "more than 2 bodies"),
                       ("\n".join(_skeleton_text(frames=2).split("\n")[:20]), "malformed")):
        path.write_text(text)
        with pytest.raises(DataError, match=says) as err:
            read_skeleton(path)
        assert path.name in str(err.value)


def test_skeleton_normalisation_is_the_references():
    from mmfusion.data.clips import normalize_skeleton

    sk = np.random.default_rng(0).normal(size=(2, 3, 10, 25)).astype(np.float32)
    out = normalize_skeleton(sk, 10)  # same length: the interpolation keeps every frame
    np.testing.assert_allclose(out, sk - sk[0:1, :, :, 1:2], atol=1e-6)
    assert not out[0, :, :, 1].any()  # the first person's joint 2 is the origin of every frame
    stretched = normalize_skeleton(sk, 20)
    assert stretched.shape == (2, 3, 20, 25)
    np.testing.assert_allclose(stretched[..., 0::2, :].mean(), out.mean(), atol=0.2)


def test_ntu_bad_skeleton_list_broken_files_and_ntu120(tmp_path):
    root = tmp_path / "NTU"
    root.mkdir()
    for k, subject in enumerate((1, 2, 3, 4)):
        stem = f"S001C001P{subject:03d}R001A{k + 1:03d}"
        (root / f"{stem}.skeleton").write_text(_skeleton_text(frames=6, seed=k))
        write_clip(root / f"{stem}_rgb.avi", frames=6, container="avi", seed=k)
    (root / "S001C001P004R001A004.skeleton").write_text("0\n")  # no frames: skipped, counted, named
    (root / "bad_skel.txt").write_text("S001C001P003R001A003\n")
    options = {"frames": 4, "size": 16, "skeleton_frames": 8}
    bundle = load_data(f"ntu:{root}", options)
    ids = [i for s in bundle.splits.values() for i in s.ids]
    assert sorted(ids) == ["S001C001P001R001A001", "S001C001P002R001A002"]
    notes = " | ".join(bundle.report.notes)
    assert "1 sample(s) of the bad skeleton list skipped" in notes
    assert "1 unreadable skeleton file(s) skipped: S001C001P004R001A004" in notes and "no frames" in notes
    stem = "S001C001P045R001A061"
    (root / f"{stem}.skeleton").write_text(_skeleton_text(frames=6))
    write_clip(root / f"{stem}_rgb.avi", frames=6, container="avi")
    with pytest.raises(DataError, match="NTU RGB\\+D 120 sample .*ntu120") as err:
        load_data(f"ntu:{root}", options)
    assert stem in str(err.value)
    big = load_data(f"ntu120:{root}", options)
    assert big.output_dim == 120 and stem in big.splits["train"].ids  # subject 45 trains in NTU-120


def test_ntu_frames_decoded_on_demand_equal_the_cached_ones(ntu_dir):
    from mmfusion.data.clips import LazyClips

    options = {"frames": 5, "size": 16, "skeleton_frames": 8}
    lazy = load_data(f"ntu:{ntu_dir}", options)
    cached = load_data(f"ntu:{ntu_dir}", options | {"rgb_cache": True})
    rgb = lazy.splits["train"].features["rgb"]
    assert isinstance(rgb, LazyClips) and rgb.shape == cached.splits["train"].features["rgb"].shape
    a = FusionDataset(lazy.splits["test"]).collate([0, 1])
    b = FusionDataset(cached.splits["test"]).collate([0, 1])
    assert a.ids == b.ids
    torch.testing.assert_close(a.features["rgb"], b.features["rgb"])
    assert float(a.features["rgb"].std()) > 0  # real frames, not zeros


def test_ntu_rgb_frames_are_sampled_as_the_authors_loader_samples_them(tmp_path):
    """The authors' loader decodes 24 slots at linspace(0, n, 24) (the last slot, frame n, never exists and stays
    black), then takes the slots at linspace(0, 23, 32); 256 x 256 frames are centre-cropped to 224 (offset 16)."""
    from mmfusion.data.clips import _ntu_frames, ntu_frame_indices

    n = 40
    path = tmp_path / "S001C001P001R001A001_rgb.avi"
    with av.open(str(path), "w") as box:  # frame t: grey level 5 t, a white 16-pixel border (cut by the crop)
        v = box.add_stream("mpeg4", rate=30)
        v.width, v.height, v.pix_fmt = 256, 256, "yuv420p"
        v.bit_rate = 8_000_000
        for t in range(n):
            img = np.full((256, 256, 3), 5 * t + 10, dtype=np.uint8)
            img[:16], img[-16:], img[:, :16], img[:, -16:] = 255, 255, 255, 255
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                box.mux(pkt)
        for pkt in v.encode():
            box.mux(pkt)
    taken = [int(i) for i in np.linspace(0, n, 24)]
    slots = [int(i) for i in np.linspace(0, 23, 32)]
    want = [taken[k] if k < 23 else -1 for k in slots]
    assert ntu_frame_indices(n, 32).tolist() == want and want[-1] == -1
    assert ntu_frame_indices(n, 32, "uniform").tolist() == [int(i) for i in np.linspace(0, n - 1, 32)]
    got = _ntu_frames(path, 32, 224).astype(float)  # (3, 32, 224, 224)
    assert got.shape == (3, 32, 224, 224)
    levels = got.mean(axis=(0, 2, 3))
    expected = np.array([5 * t + 10 if t >= 0 else 0 for t in want], dtype=float)
    np.testing.assert_allclose(levels, expected, atol=4)  # no white border: the crop is the centre
    assert got[:, -1].max() == 0  # the authors' black last frame
    short = ntu_frame_indices(10, 32)  # a short clip repeats indices: fewer filled slots, more black ones
    assert (short == -1).sum() > 2 and sorted(set(short[short >= 0].tolist())) == list(range(10))

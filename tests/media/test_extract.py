"""mmfusion extract / predict on video files / make-dataset talking-faces, on clips generated here (no downloads:
the snippets are injected, the models ship in the media extra's wheels)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("mediapipe")
pytest.importorskip("opensmile")

from mmfusion.cli.main import main  # noqa: E402
from mmfusion.data.custom import read_custom  # noqa: E402
from mmfusion.media import FeatureSet  # noqa: E402
from mmfusion.media.extract import assign_splits, read_labels, run_extract  # noqa: E402
from mmfusion.media.features import block_average, face_geometry, words_of  # noqa: E402
from mmfusion.media.talking import FaceRenderer, Style, make_clip, make_talking_faces, vader_snippets, write_clip  # noqa: E402
from mmfusion.media.transcript import read_transcript  # noqa: E402

SNIPPETS = [("a wonderful, moving film", 2.5), ("dull and lifeless", -2.2), ("the best movie this year", 2.8),
            ("a tedious mess", -2.6), ("charming and funny", 2.0), ("boring plot, bad acting", -2.4)]
SMALL = Style(width=192, height=144, fps=25, audio_rate=16000, channels=1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clips")
    make_talking_faces(out, 6, snippets=SNIPPETS, style=SMALL, speakers=3)
    return out


@pytest.fixture(scope="module")
def dataset(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "talk.h5"
    summary = run_extract(clips, out, labels=clips / "labels.csv")
    assert not summary.failed and summary.extracted == 6
    return out


def _meta(h5: h5py.File, split: str) -> list[dict]:
    return [json.loads(m) for m in h5[split]["meta"][()]]


def test_extracted_lengths_follow_duration_rate_and_words(clips: Path, dataset: Path) -> None:
    bundle = read_custom(dataset)
    assert bundle.feature_set == FeatureSet().name
    assert bundle.feature_dims == {"text": 384, "audio": 25, "vision": 12}
    labels = {r["id"]: float(r["label"]) for r in csv.DictReader(open(clips / "labels.csv"))}
    seen = 0
    with h5py.File(dataset) as h5:
        for split, s in bundle.splits.items():
            for n, (cid, meta) in enumerate(zip(s.ids, _meta(h5, split), strict=True)):
                seen += 1
                words = json.loads((clips / f"{cid}.json").read_text())["words"]
                assert s.lengths["text"][n] == len(words)
                assert abs(s.lengths["audio"][n] - meta["audio_seconds"] * 20) <= 1
                dropped = h5[split]["vision"]["dropped"][n]
                assert abs(s.lengths["vision"][n] + dropped - meta["duration"] * 15) <= 1
                assert dropped == 0  # the face is in every frame of these clips
                assert s.labels[n] == pytest.approx(labels[cid])
                times = h5[split]["text"]["times"][n, :len(words)]
                assert np.all(np.diff(times[:, 0]) >= 0) and times[-1, 1] <= meta["duration"] + 0.05
    assert seen == 6 and set(bundle.splits) == {"train", "valid", "test"}


def test_face_geometry_follows_the_rendered_mouth_and_expression() -> None:
    r = FaceRenderer(Style(width=256, height=256), speaker=0)
    import mediapipe as mp

    def geom(opening: float, expression: float) -> np.ndarray:
        img = r.frame(opening, expression)
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True) as fm:
            lm = fm.process(img).multi_face_landmarks[0].landmark
        return face_geometry(np.array([(q.x * 256, q.y * 256, q.z * 256) for q in lm]))

    closed, open_ = geom(0.0, 0.0), geom(1.0, 0.0)
    assert open_[0] > closed[0] + 0.05  # mouth opening
    happy, sad = geom(0.0, 1.0), geom(0.0, -1.0)
    assert happy[2] + happy[3] > sad[2] + sad[3]  # lip corners higher when the rating is positive


def test_faceless_frames_are_dropped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "away.mp4", "the face leaves the picture for a while", 1.0, 0, SMALL, random.Random(0),
              hide=(0.4, 1.2))
    run_extract(folder, tmp_path / "d.h5", split="test")
    with h5py.File(tmp_path / "d.h5") as h5:
        meta = _meta(h5, "test")[0]
        dropped = int(h5["test"]["vision"]["dropped"][0])
        length = int(h5["test"]["vision"]["lengths"][0])
    assert abs(dropped - 0.8 * 15) <= 1  # 0.4 s to 1.2 s at 15 Hz
    assert abs(length + dropped - meta["duration"] * 15) <= 1
    assert meta["faceless"] == dropped


def test_broken_clips_are_reported_by_name_and_the_rest_extracted(clips: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(clips / "spk0_00000.mp4", folder / "good.mp4")
    shutil.copy(clips / "spk0_00000.json", folder / "good.json")
    (folder / "empty.mp4").write_bytes(b"")
    data = (clips / "spk1_00001.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    r = FaceRenderer(SMALL, 0)
    write_clip(folder / "silent_film.mp4", [r.frame(0, 0)] * 10, 25, None, 16000)
    (folder / "badwords.mp4").write_bytes((clips / "spk2_00002.mp4").read_bytes())
    (folder / "badwords.json").write_text("{not json")
    out = tmp_path / "d.h5"
    rc = main(["extract", str(folder), "--out", str(out), "--split", "test", "--no-progress"])
    assert rc == 1
    reasons = {row["id"]: row["reason"] for row in csv.DictReader(open(tmp_path / "d.h5.errors.csv"))}
    assert reasons == {"empty": "empty file (0 bytes)", "truncated": "corrupt or truncated file",
                       "silent_film": "no audio track", "badwords": "unreadable transcript"}
    assert read_custom(out).splits["test"].ids == ["good"]
    assert "4 clip(s) failed" in capsys.readouterr().out


def test_rerun_skips_finished_clips_and_an_interrupted_run_gives_the_same_file(clips: Path, dataset: Path,
                                                                               tmp_path: Path) -> None:
    again = run_extract(clips, dataset, labels=clips / "labels.csv")
    assert again.skipped == 6 and again.extracted == 0

    out = tmp_path / "interrupted.h5"
    calls = []

    def stop_after_two(done: int, total: int, name: str) -> None:
        calls.append(name)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_extract(clips, out, labels=clips / "labels.csv", progress=stop_after_two)
    assert not out.exists() and len(list((tmp_path / "interrupted.h5.parts").glob("*.npz"))) == 2
    rest = run_extract(clips, out, labels=clips / "labels.csv")
    assert rest.skipped == 2 and rest.extracted == 4
    with h5py.File(out) as a, h5py.File(dataset) as b:
        assert dict(a.attrs) == dict(b.attrs)
        keys_a, keys_b = [], []
        a.visit(keys_a.append)
        b.visit(keys_b.append)
        assert keys_a == keys_b
        for k in keys_a:
            if isinstance(a[k], h5py.Dataset):
                np.testing.assert_array_equal(a[k][()], b[k][()], err_msg=k)


@pytest.mark.parametrize("name,style", [
    ("webm_vp9_opus_48k_stereo_30fps.webm", Style(width=192, height=144, fps=30, audio_rate=48000, channels=2,
                                                  container="webm")),
    ("mkv_h264_aac.mkv", Style(width=192, height=144, fps=25, audio_rate=16000, container="mkv")),
    ("vertical_phone_30fps.mp4", Style(width=144, height=256, fps=30, audio_rate=48000, channels=2)),
])
def test_varied_containers_and_codecs_extract(tmp_path: Path, name: str, style: Style) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    make_clip(folder / name, "what a lovely surprise", 2.0, 1, style, random.Random(1))
    s = run_extract(folder, tmp_path / "d.h5", split="test")
    assert not s.failed
    with h5py.File(tmp_path / "d.h5") as h5:
        meta = _meta(h5, "test")[0]
        L = {m: int(h5["test"][m]["lengths"][0]) for m in ("text", "audio", "vision")}
    assert (meta["width"], meta["height"]) == (style.width, style.height)
    assert L["text"] == 4 and abs(L["audio"] - meta["audio_seconds"] * 20) <= 1
    assert abs(L["vision"] - meta["duration"] * 15) <= 1 and meta["faceless"] == 0


def test_plain_transcript_is_aligned_and_no_speech_gives_an_empty_text_stream(clips: Path, tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    shutil.copy(clips / "spk0_00000.mp4", folder / "said.mp4")
    text = json.loads((clips / "spk0_00000.json").read_text())["text"]
    (folder / "said.txt").write_text(text)
    r = FaceRenderer(SMALL, 0)
    write_clip(folder / "quiet.mp4", [r.frame(0, 0)] * 25, 25, np.zeros(16000, np.float32), 16000)
    s = run_extract(folder, tmp_path / "d.h5", split="test")
    assert not s.failed
    with h5py.File(tmp_path / "d.h5") as h5:
        ids = [i.decode() for i in h5["test"]["ids"][()]]
        L = dict(zip(ids, h5["test"]["text"]["lengths"][()], strict=True))
        meta = dict(zip(ids, _meta(h5, "test"), strict=True))
        times = h5["test"]["text"]["times"][ids.index("said")]
    assert L == {"quiet": 0, "said": len(words_of(text))}
    assert meta["said"]["text_source"].startswith("txt, aligned")
    assert meta["quiet"]["text_source"].startswith("recognised")
    n = L["said"]
    assert np.all(np.diff(times[:n, 0]) >= 0) and 0 <= times[0, 0] and times[n - 1, 1] <= meta["said"]["duration"]


def test_transcript_formats(tmp_path: Path) -> None:
    (tmp_path / "a.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nHello there,\nfriend!\n\n"
                                    "2\n00:00:03,000 --> 00:00:03,500\nbye\n")
    words, times = read_transcript(tmp_path / "a.srt")
    assert words == ["Hello", "there", "friend", "bye"]
    np.testing.assert_allclose(times[:, 0], [1, 1 + 1 / 3, 1 + 2 / 3, 3])
    (tmp_path / "b.json").write_text(json.dumps([{"word": "don't,", "start": 0.1, "end": 0.3}]))
    assert read_transcript(tmp_path / "b.json")[0] == ["don't"]


def test_block_average_gives_ceil_duration_times_rate_frames() -> None:
    lld = np.arange(300, dtype=np.float32)[:, None]  # 3 s at 100 Hz
    out = block_average(lld, 0.01, 3.0, 20)
    assert out.shape == (60, 1) and out[0, 0] == pytest.approx(2.0) and out[1, 0] == pytest.approx(7.0)
    assert block_average(lld[:298], 0.01, 3.03, 20).shape == (61, 1)  # a last block without descriptors repeats


def test_labels_and_splits(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("id,happy,sad\na,1,0\nb,0,1\n")
    lab = read_labels(tmp_path / "l.csv")
    assert lab.task == "emotion" and lab.emotions == ("happy", "sad") and lab.values["b"].tolist() == [0, 1]
    ids = [f"spk{k}_{i}" for k in range(6) for i in range(3)]
    by_speaker = assign_splits(ids, "speaker", seed=3)
    for k in range(6):
        assert len({by_speaker[f"spk{k}_{i}"] for i in range(3)}) == 1
    assert set(by_speaker.values()) == {"train", "valid", "test"}
    assert assign_splits(ids, "random", seed=1) == assign_splits(ids, "random", seed=1)
    (tmp_path / "s.csv").write_text("id,split\n" + "".join(f"{i},test\n" for i in ids))
    assert set(assign_splits(ids, str(tmp_path / "s.csv")).values()) == {"test"}


def test_fit_then_predict_a_video_from_the_cli_and_refuse_another_feature_set(clips: Path, dataset: Path,
                                                                              tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["fit", "--model", "mea_tiny", "--data", f"h5:{dataset}", "--max-epochs", "1", "--threads", "1",
                 "--out", str(runs), "--seeds", "1", "--no-progress"]) == 0
    ckpt = next(runs.rglob("best.ckpt"))
    capsys.readouterr()
    assert main(["predict", "--ckpt", str(ckpt), str(clips / "spk0_00000.mp4"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["id"] == "spk0_00000" and res["class"] in ("positive", "negative", "neutral")
    assert set(res["wal"]) == {"text", "audio", "vision"} and sum(res["wal"].values()) == pytest.approx(1, abs=1e-4)
    assert set(res["dgf"]) == {"exclusive", "agnostic"}
    assert res["lengths"]["text"] == len(json.loads((clips / "spk0_00000.json").read_text())["words"])
    # the same clip given as an extracted file predicts the same score
    assert main(["predict", "--ckpt", str(ckpt), str(clips / "spk0_00000.mp4"), "--transcript",
                 "a wonderful moving film"]) == 0
    assert "WAL weights" in capsys.readouterr().out

    assert main(["predict", "--ckpt", str(ckpt), "--data", f"h5:{dataset}", str(clips / "spk0_00000.mp4")]) == 2
    assert "give --data or video files, not both" in capsys.readouterr().err
    assert main(["data", f"h5:{dataset}"]) == 0
    assert f"feature set: {FeatureSet().name}" in capsys.readouterr().out

    other = tmp_path / "other.h5"
    run_extract(clips, other, fs=FeatureSet(vision_rate=10), labels=clips / "labels.csv")
    capsys.readouterr()
    assert main(["test", "--ckpt", str(ckpt), "--data", f"h5:{other}"]) == 2
    err = capsys.readouterr().err
    assert FeatureSet().name in err and FeatureSet(vision_rate=10).name in err


def test_vader_ratings_are_read_from_the_sdist_in_the_cache(tmp_path: Path, monkeypatch) -> None:
    lines = "1\t2.0\tA fine film\r\n2\t-4.0\tAwful\r\n"
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as t:
        info = tarfile.TarInfo("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
        info.size = len(lines.encode())
        t.addfile(info, io.BytesIO(lines.encode()))
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        info = tarfile.TarInfo("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(inner.getvalue())
        t.addfile(info, io.BytesIO(inner.getvalue()))

    def fake_pip(cmd, **kw):  # what `pip download` leaves in its -d folder
        assert cmd[-4:-2] == ["--quiet", "vaderSentiment==3.3.2"]
        shutil.copy(sdist, Path(cmd[-1]) / sdist.name)
        return type("R", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr("mmfusion.media.talking.subprocess.run", fake_pip)
    got = vader_snippets(tmp_path / "cache")
    assert got == [("A fine film", 1.5), ("Awful", -3.0)]
    assert (tmp_path / "cache" / "vader" / "movieReviewSnippets_GroundTruth.txt").exists()


def test_make_dataset_writes_clips_transcripts_and_labels(tmp_path: Path) -> None:
    res = make_talking_faces(tmp_path, 2, snippets=SNIPPETS[:2], style=SMALL, seed=5)
    assert res["clips"] == 2
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    for r in rows:
        words = json.loads((tmp_path / f"{r['id']}.json").read_text())
        text = dict((t, v) for t, v in SNIPPETS)
        assert float(r["label"]) == pytest.approx(text[words["text"]])
        assert [w["word"] for w in words["words"]] == words_of(words["text"])
        import av

        with av.open(str(tmp_path / f"{r['id']}.mp4")) as box:
            assert box.streams.audio[0].codec_context.name == "aac"
            assert box.streams.video[0].codec_context.name == "h264"
            assert math.isclose(float(box.streams.video[0].average_rate), 25)


def test_a_killed_parallel_run_then_a_rerun_gives_the_file_of_one_run(clips: Path, dataset: Path,
                                                                      tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "mmfusion", "extract", str(clips), "--out", str(out), "--labels",
                             str(clips / "labels.csv"), "--workers", "2", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = tmp_path / "killed.h5.parts"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not list(parts.glob("*.npz")):
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes, mid-run
        proc.wait()
    assert not out.exists()
    kept = len(list(parts.glob("*.npz")))
    assert 1 <= kept < 6
    rest = run_extract(clips, out, labels=clips / "labels.csv")
    assert (rest.skipped, rest.extracted) == (kept, 6 - kept)
    with h5py.File(out) as a, h5py.File(dataset) as b:
        assert dict(a.attrs) == dict(b.attrs)
        for split in ("train", "valid", "test"):
            assert a[split]["ids"][()].tolist() == b[split]["ids"][()].tolist()
            for m in ("text", "audio", "vision"):
                np.testing.assert_array_equal(a[split][m]["lengths"][()], b[split][m]["lengths"][()])
                # worker processes run torch with one thread: sums may round differently in the last bits
                np.testing.assert_allclose(a[split][m]["features"][()], b[split][m]["features"][()], rtol=1e-4,
                                           atol=1e-5)


def test_make_dataset_command(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("mmfusion.media.talking.vader_snippets", lambda: SNIPPETS)
    assert main(["make-dataset", "talking-faces", "--n", "2", "--out", str(tmp_path), "--size", "160x120",
                 "--fps", "15", "--face-strength", "0", "--voice-noise", "0.5", "--no-progress"]) == 0
    assert "text and labels are real" in capsys.readouterr().out
    made = json.loads((tmp_path / "clips.json").read_text())
    assert [r["face_rating"] for r in made] == [0.0, 0.0]  # strength 0: the face shows no rating
    assert all(r["voice_rating"] != r["label"] for r in made)  # noise moved the voice's rating
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["spk0_00000.mp4", "spk1_00001.mp4"]


def test_mfcc_set_and_feature_set_names() -> None:
    from mmfusion.media.features import AudioFeatures

    audio = np.sin(np.arange(16000 * 2.05) * 2 * np.pi * 220 / 16000).astype(np.float32)
    for rate in (20.0, 12.5):
        out = AudioFeatures("mfcc", rate)(audio)
        assert out.shape == (math.ceil(2.05 * rate), 40) and np.isfinite(out).all()
    fs = FeatureSet("mfcc", 12.5, 10)
    assert FeatureSet.parse(fs.name) == fs and fs.dims["audio"] == 40
    assert fs.name != FeatureSet().name
    with pytest.raises(Exception, match="not a feature set"):
        FeatureSet.parse("openface-2")


def test_emotion_labels_are_written_and_read_back(tmp_path: Path) -> None:
    from mmfusion.media.extract import Labels, _write_dataset

    fs = FeatureSet()
    recs = [{"id": f"c{i}", "text": np.ones((i, 384), np.float32), "audio": np.ones((3, 25), np.float32),
             "vision": np.ones((2 + i, 12), np.float32), "text_times": np.zeros((i, 2), np.float32),
             "meta": {"faceless": i}} for i in range(3)]
    lab = Labels("emotion", ("happy", "sad"), {"c0": np.array([1, 0]), "c1": np.array([0, 1]),
                                              "c2": np.array([1, 1])})
    _write_dataset(tmp_path / "e.h5", fs, recs, {"c0": "train", "c1": "valid", "c2": "test"}, lab)
    b = read_custom(tmp_path / "e.h5")
    assert b.task == "emotion" and b.emotions == ("happy", "sad") and b.feature_set == fs.name
    assert b.splits["test"].labels.tolist() == [[1, 1]] and b.splits["train"].lengths["text"].tolist() == [0]
    with h5py.File(tmp_path / "e.h5") as h5:
        assert h5["valid"]["vision"]["dropped"][()].tolist() == [1]

"""The CMU-MultimodalSDK release as users have it: its file names, its standard folds, knowing which release a file
is. Folders are written in the SDK's exact HDF5 structure under the release's file names, with real video ids."""

import json

import h5py
import numpy as np
import pytest

from mmfusion.cli.main import main
from mmfusion.data import load_data, releases
from mmfusion.data.csd import write_csd

MOSI = releases.standard_folds("CMU-MOSI")
MOSEI = releases.standard_folds("CMU-MOSEI")
# two standard videos of each fold (the first of the train fold comes third so that order cannot fake the result)
MOSI_IDS = MOSI["train"][:2] + MOSI["valid"][:2] + MOSI["test"][:2]
MOSEI_IDS = MOSEI["train"][:2] + MOSEI["valid"][:1] + MOSEI["test"][:1]
DIMS = {"COVAREP": 74, "openSMILE_IS09": 384, "FACET_4.1": 47, "OpenFace2": 43, "GloVe": 300}


def _meta(name: str) -> dict:
    return {"root name": name, "computational sequence description": f"{name} (test)",
            "dimension names": None, "computational sequence version": "1.0", "alignment compatible": True}


def _intervals(n: int, step: float) -> np.ndarray:
    return np.stack([np.arange(n) * step, np.arange(n) * step + step], 1)


def write_release(root, ids, *, prefix="CMU_MOSI", label_cols=1, facet42=False, seed=0):
    """A folder of the SDK's computational sequences: words (fixed-length byte strings), GloVe vectors, COVAREP,
    openSMILE IS09, FACET 4.1, OpenFace2 and the opinion labels (two 1.5 s segments per video)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    seqs = {k: {} for k in ("words", "glove", "covarep", "is09", "facet", "openface", "labels")}
    for vid in ids:
        words = np.array([[w] for w in (b"i", b"really", b"liked", b"this", b"movie", b"sp")], dtype="S16")
        seqs["words"][vid] = (words, _intervals(6, 0.5))
        seqs["glove"][vid] = (rng.normal(size=(6, DIMS["GloVe"])), _intervals(6, 0.5))
        seqs["covarep"][vid] = (rng.normal(size=(30, DIMS["COVAREP"])), _intervals(30, 0.1))
        seqs["is09"][vid] = (rng.normal(size=(30, DIMS["openSMILE_IS09"])), _intervals(30, 0.1))
        facet_dim = DIMS["FACET_4.1"] if prefix == "CMU_MOSI" else 35  # FACET 4.2 in CMU-MOSEI
        seqs["facet"][vid] = (rng.normal(size=(12, facet_dim)), _intervals(12, 0.25))
        seqs["openface"][vid] = (rng.normal(size=(12, DIMS["OpenFace2"])), _intervals(12, 0.25))
        lab = rng.uniform(-3, 3, size=(2, label_cols))
        if label_cols == 7:  # sentiment, then six emotion intensities in [0, 3] (some absent)
            lab[:, 1:] = rng.choice([0.0, 0.3, 1.0, 2.6], size=(2, 6))
        seqs["labels"][vid] = (lab, _intervals(2, 1.5))
    if prefix == "CMU_MOSI":
        names = {"words": "CMU_MOSI_TimestampedWords", "glove": "CMU_MOSI_TimestampedWordVectors_1.1",
                 "covarep": "CMU_MOSI_COVAREP", "is09": "CMU_MOSI_openSMILE_IS09",
                 "facet": "CMU_MOSI_VisualFacet_4.1", "openface": "CMU_MOSI_OpenFace2",
                 "labels": "CMU_MOSI_Opinion_Labels"}
    else:
        names = {"words": "CMU_MOSEI_TimestampedWords", "glove": "CMU_MOSEI_TimestampedWordVectors",
                 "covarep": "CMU_MOSEI_COVAREP", "is09": "CMU_MOSEI_openSMILE_IS09",
                 "facet": "CMU_MOSEI_VisualFacet42", "openface": "CMU_MOSEI_VisualOpenFace2",
                 "labels": "CMU_MOSEI_Labels"}
    for key, stem in names.items():
        write_csd(root / f"{stem}.csd", stem, seqs[key], metadata=_meta(stem))
    if facet42:
        write_csd(root / "CMU_MOSI_Visual_Facet_42.csd", "FACET_4.2", seqs["openface"],
                  metadata=_meta("FACET_4.2"))
    return names


def test_the_writer_produces_the_sdk_structure(tmp_path):
    write_release(tmp_path, MOSI_IDS[:1])
    with h5py.File(tmp_path / "CMU_MOSI_TimestampedWords.csd", "r") as h5:
        assert list(h5) == ["CMU_MOSI_TimestampedWords"]
        root = h5["CMU_MOSI_TimestampedWords"]
        assert sorted(root) == ["data", "metadata"]
        feats = root[f"data/{MOSI_IDS[0]}/features"]
        assert feats.dtype.kind == "S" and feats.shape == (6, 1)
        meta = root["metadata/root name"]
        assert meta.shape == (1,) and h5py.check_string_dtype(meta.dtype).length is None  # variable length
        assert json.loads(meta[0]) == "CMU_MOSI_TimestampedWords"


def test_a_release_folder_reads_without_manifest_into_the_standard_folds(tmp_path):
    write_release(tmp_path, MOSI_IDS)
    bundle = load_data(f"csd:{tmp_path}")
    fold = releases.fold_of("CMU-MOSI")
    for split, data in bundle.splits.items():
        assert len(data) == 4  # two videos x two segments
        assert {i.split("[")[0] for i in data.ids} == {v for v in MOSI_IDS if fold[v] == split}
    assert bundle.feature_dims == {"text": 300, "vision": 47, "audio": 74}  # GloVe, FACET 4.1, COVAREP
    assert bundle.report.split.startswith("standard CMU-MOSI folds (CMU-MultimodalSDK") and \
        bundle.report.split.endswith(": 2/2/2 videos")
    assert bundle.report.caveats == []
    notes = " | ".join(bundle.report.notes)
    assert "skipped 1 sequence(s) that are not numeric features" in notes and "CMU_MOSI_TimestampedWords.csd" in notes
    assert "CMU_MOSI_openSMILE_IS09.csd (openSMILE_IS09)" in notes and "CMU_MOSI_OpenFace2.csd (OpenFace2)" in notes
    assert bundle.report.release["release"] == "CMU-MultimodalSDK CMU-MOSI computational sequences"
    assert "video ids in its standard folds" in bundle.report.release["line"]


@pytest.mark.parametrize(("option", "dims"), [
    ({"audio": "openSMILE_IS09"}, {"audio": 384, "vision": 47}),
    ({"vision": "OpenFace2"}, {"audio": 74, "vision": 43}),
    ({"audio": "opensmile", "vision": "CMU_MOSI_OpenFace2.csd"}, {"audio": 384, "vision": 43}),
])
def test_data_args_choose_another_feature_set(tmp_path, option, dims):
    write_release(tmp_path, MOSI_IDS)
    bundle = load_data(f"csd:{tmp_path}", option)
    assert {m: bundle.feature_dims[m] for m in dims} == dims


def test_fit_and_data_spell_the_choice_alike(tmp_path, capsys):
    write_release(tmp_path, MOSI_IDS)
    assert main(["data", f"csd:{tmp_path}", "--set", "data_args.audio=openSMILE_IS09"]) == 0
    assert "audio 3x384" in capsys.readouterr().out


def test_an_ambiguous_or_absent_feature_set_is_refused_by_name(tmp_path, capsys):
    write_release(tmp_path, MOSI_IDS, facet42=True)
    assert load_data(f"csd:{tmp_path}").feature_dims["vision"] == 47  # FACET 4.1 is the default of the two
    assert main(["data", f"csd:{tmp_path}", "--set", "vision=facet"]) == 2
    err = capsys.readouterr().err
    assert "vision='facet' fits several files" in err
    assert "CMU_MOSI_VisualFacet_4.1.csd" in err and "CMU_MOSI_Visual_Facet_42.csd" in err
    assert main(["data", f"csd:{tmp_path}", "--set", "audio=EB10"]) == 2
    err = capsys.readouterr().err
    assert "no file holds the audio feature set 'EB10'" in err and "'openSMILE_IS09'" in err


def test_unknown_ids_get_a_split_flagged_non_standard_in_the_summary_and_metrics(tmp_path, capsys):
    data = tmp_path / "mine"
    write_release(data, [f"clip{i:02d}" for i in range(10)])
    out = tmp_path / "runs"
    assert main(["fit", "--model", "lf_lstm", "--data", f"csd:{data}", "--out", str(out), "--max-epochs", "1",
                 "--batch-size", "8", "--no-progress", "--set", "model_args.hidden=8"]) == 0
    assert "non-standard split" in capsys.readouterr().out
    run = next(out.glob("lf_lstm/*/seed_1111"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["data_caveats"]) == 1 and metrics["data_caveats"][0].startswith("non-standard split")
    assert "**Data:** non-standard split" in (run / "summary.md").read_text()
    assert "**Data:** non-standard split" in (run.parent / "summary.md").read_text()
    assert json.loads((run.parent / "summary.json").read_text())["data_caveats"] == metrics["data_caveats"]
    report = json.loads((run / "data_report.json").read_text())
    assert report["split"].startswith("non-standard split") and report["caveats"] == metrics["data_caveats"]


def test_manifest_splits_win_over_the_standard_folds(tmp_path):
    write_release(tmp_path, MOSI_IDS)
    test_vid, train_vid = MOSI["test"][0], MOSI["train"][0]
    listed = {"train": [test_vid, MOSI_IDS[1]], "valid": MOSI_IDS[2:4], "test": [train_vid, MOSI_IDS[5]]}
    (tmp_path / "mmfusion_csd.json").write_text(json.dumps({"splits": listed}))
    bundle = load_data(f"csd:{tmp_path}")
    assert f"{test_vid}[0]" in bundle.splits["train"].ids and f"{train_vid}[0]" in bundle.splits["test"].ids
    assert bundle.report.split == "listed in mmfusion_csd.json" and bundle.report.caveats == []


def test_ids_outside_every_fold_of_a_known_dataset_are_counted_and_left_out(tmp_path):
    write_release(tmp_path, MOSI_IDS + ["not-a-mosi-video", "neither-this"])
    bundle = load_data(f"csd:{tmp_path}")
    ids = {i.split("[")[0] for s in bundle.splits.values() for i in s.ids}
    assert ids == set(MOSI_IDS)
    assert "2 videos belong to no standard CMU-MOSI fold and were left out (first 'neither-this')" in \
        bundle.report.notes
    assert bundle.report.caveats == []


def test_mosei_labels_read_as_sentiment_or_as_six_emotions(tmp_path):
    write_release(tmp_path, MOSEI_IDS, prefix="CMU_MOSEI", label_cols=7)
    with h5py.File(tmp_path / "CMU_MOSEI_Labels.csd", "r") as h5:
        truth = {vid: h5[f"CMU_MOSEI_Labels/data/{vid}/features"][()] for vid in MOSEI_IDS}
    senti = load_data(f"csd:{tmp_path}")
    assert senti.task == "regression" and senti.report.split.startswith("standard CMU-MOSEI folds")
    assert senti.feature_dims == {"text": 300, "vision": 35, "audio": 74}  # GloVe, FACET 4.2, COVAREP
    assert senti.report.release["release"] == "CMU-MultimodalSDK CMU-MOSEI computational sequences"
    s = senti.splits["train"]
    vid = MOSEI["train"][0]
    assert s.labels[s.ids.index(f"{vid}[1]")] == pytest.approx(truth[vid][1, 0])
    emo = load_data(f"csd:{tmp_path}", {"labels": "emotions"})
    assert emo.task == "emotion" and emo.emotions == ("happy", "sad", "anger", "surprise", "disgust", "fear")
    e = emo.splits["train"]
    np.testing.assert_array_equal(e.labels[e.ids.index(f"{vid}[1]")], (truth[vid][1, 1:] > 0).astype(np.int64))
    assert e.labels.shape == (4, 6) and e.labels.dtype == np.int64


def test_emotions_from_a_one_column_label_file_are_refused(tmp_path, capsys):
    write_release(tmp_path, MOSI_IDS)
    assert main(["data", f"csd:{tmp_path}", "--set", "labels=emotions"]) == 2
    err = capsys.readouterr().err
    assert "CMU_MOSI_Opinion_Labels.csd: emotion labels need CMU-MOSEI's label columns" in err
    assert "got 1 columns" in err


# ---- knowing which release a pickle is ------------------------------------------------------------------------------

def test_mmsa_file_with_a_published_checksum_is_named_and_a_modified_copy_matches_none(tmp_path, capsys,
                                                                                       monkeypatch):
    from tests.helpers import write_mosi_mmsa

    path = tmp_path / "MOSI" / "unaligned_50.pkl"
    path.parent.mkdir()
    write_mosi_mmsa(path)
    digest = releases.sha256_of(path)
    # the real checksums belong to files of gigabytes; this file stands in for one of them
    monkeypatch.setitem(releases.MMSA_SHA256, digest, "MMSA CMU-MOSI MOSI/Processed/unaligned_50.pkl")
    assert main(["data", f"mmsa:{path}", "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "release: MMSA CMU-MOSI MOSI/Processed/unaligned_50.pkl (SHA-256 matches the checksum MMSA publishes)" \
        in out
    info = json.loads((tmp_path / "d.json").read_text())["report"]["release"]
    assert info["by"] == "sha256" and info["sha256"] == digest
    write_mosi_mmsa(path, seed=1)  # same layout and shapes, other content
    assert main(["data", f"mmsa:{path}"]) == 0
    out = capsys.readouterr().out
    assert "release: matches no known release (SHA-256" in out and "MMSA CMU-MOSI MOSI" not in out


def test_a_run_records_the_release_in_data_report_json(tmp_path, monkeypatch):
    from tests.helpers import write_mosi_mmsa

    path = tmp_path / "unaligned_50.pkl"
    write_mosi_mmsa(path)
    monkeypatch.setitem(releases.MMSA_SHA256, releases.sha256_of(path), "MMSA CMU-MOSI MOSI/Processed/unaligned_50.pkl")
    out = tmp_path / "runs"
    assert main(["fit", "--model", "lf_lstm", "--data", f"mmsa:{path}", "--out", str(out), "--max-epochs", "1",
                 "--batch-size", "8", "--no-progress", "--set", "model_args.hidden=8"]) == 0
    report = json.loads((next(out.glob("lf_lstm/*/seed_1111")) / "data_report.json").read_text())
    assert report["release"]["release"] == "MMSA CMU-MOSI MOSI/Processed/unaligned_50.pkl"


def _bundle_of_shapes(dims, lengths, sizes, task="regression"):
    """A bundle with the given shapes; np.zeros does not touch the memory of these large arrays."""
    from mmfusion.data.dataset import DatasetBundle, SplitData

    splits = {}
    for s, n in zip(("train", "valid", "test"), sizes):
        feats = {m: np.zeros((n, lengths[i], dims[i]), np.float32) for i, m in enumerate(("text", "audio", "vision"))}
        labels = np.zeros((n, 4), np.int64) if task == "emotion" else np.zeros(n, np.float32)
        splits[s] = SplitData(feats, {m: np.zeros(n, np.int64) for m in feats}, labels, [str(i) for i in range(n)])
    return DatasetBundle("x", task, splits, "x", emotions=("a", "b", "c", "d") if task == "emotion" else ())


@pytest.mark.parametrize(("name", "reader", "dims", "lengths", "sizes", "task", "expect"), [
    ("mosi_data_noalign.pkl", "mult", (300, 5, 20), (50, 375, 500), (1284, 229, 686), "regression",
     "MulT CMU-MOSI mosi_data_noalign.pkl"),
    ("mosei_senti_data_noalign.pkl", "mult", (300, 74, 35), (50, 500, 500), (16326, 1871, 4659), "regression",
     "MulT CMU-MOSEI mosei_senti_data_noalign.pkl"),
    ("iemocap_data_noalign.pkl", "mult", (300, 74, 35), (20, 400, 500), (2717, 798, 938), "emotion",
     "MulT IEMOCAP iemocap_data_noalign.pkl"),
    ("mosi_data_noalign.pkl", "mult", (300, 5, 20), (50, 375, 500), (1283, 229, 686), "regression", None),
    ("x.pkl", "mult", (300, 74, 47), (50, 375, 500), (1284, 229, 686), "regression", None),
])
def test_pickles_without_checksums_are_known_by_their_recorded_shapes(tmp_path, name, reader, dims, lengths, sizes,
                                                                      task, expect):
    path = tmp_path / name
    path.write_bytes(b"")
    got = releases.identify_pickle(path, reader, _bundle_of_shapes(dims, lengths, sizes, task))
    assert got["release"] == expect
    assert got["sha256"] is None  # no checksum is published for these names: the file is not read twice
    if expect:
        assert got["by"] == "shapes" and got["line"].startswith(f"release: {expect} by its recorded shapes")
    else:
        assert got["line"].startswith("release: matches no known release")


def test_the_fold_lists_ship_with_their_source():
    for name, file in releases.STANDARD_DATASETS.items():
        folds = releases.standard_folds(name)
        assert folds["dataset"] == name and "CMU-MultimodalSDK" in folds["source"] and file in folds["source"]
        sets = [set(folds[s]) for s in ("train", "valid", "test")]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert [len(MOSI[s]) for s in ("train", "valid", "test")] == [52, 10, 31]

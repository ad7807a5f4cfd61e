import json

import numpy as np
import pytest

from mmfusion.data import load_data
from mmfusion.data.csd import write_csd
from mmfusion.errors import DataError


def _write_dir(root, n_videos=10):
    rng = np.random.default_rng(0)
    words, covarep, facet, labels = {}, {}, {}, {}
    for v in range(n_videos):
        vid = f"vid{v}"
        n_words = 6
        w_iv = np.stack([np.arange(n_words) * 0.5, np.arange(n_words) * 0.5 + 0.5], 1)  # 0.5 s words
        words[vid] = (rng.normal(size=(n_words, 4)), w_iv)
        a_iv = np.stack([np.arange(30) * 0.1, np.arange(30) * 0.1 + 0.1], 1)  # 10 Hz audio
        covarep[vid] = (np.arange(30, dtype=np.float64)[:, None].repeat(3, 1), a_iv)
        f_iv = np.stack([np.arange(12) * 0.25, np.arange(12) * 0.25 + 0.25], 1)  # 4 Hz video
        facet[vid] = (rng.normal(size=(12, 2)), f_iv)
        labels[vid] = (np.array([[1.5], [-0.5]]), np.array([[0.0, 1.5], [1.5, 3.0]]))  # two segments
    write_csd(root / "CMU_MOSI_TimestampedWordVectors.csd", "glove_vectors", words)
    write_csd(root / "CMU_MOSI_COVAREP.csd", "COVAREP", covarep)
    write_csd(root / "CMU_MOSI_Visual_Facet_41.csd", "FACET 4.1", facet)
    write_csd(root / "CMU_MOSI_Opinion_Labels.csd", "Opinion Segment Labels", labels)


def test_word_alignment_averages_overlapping_frames(tmp_path):
    _write_dir(tmp_path)
    bundle = load_data(f"csd:{tmp_path}")
    total = sum(len(s) for s in bundle.splits.values())
    assert total == 20  # 10 videos x 2 segments
    s = next(s for s in bundle.splits.values() if len(s))
    assert bundle.feature_dims == {"text": 4, "vision": 2, "audio": 3}
    # each segment of 1.5 s covers three 0.5 s words; aligned streams have one frame per word
    assert all((s.lengths[m] == 3).all() for m in ("text", "vision", "audio"))
    i = s.ids.index(next(x for x in s.ids if x.endswith("[0]")))
    # word 0 spans 0-0.5 s: audio frames 0..4 (values 0..4) overlap it, so the average is 2
    np.testing.assert_allclose(s.features["audio"][i, :3, 0], [2.0, 7.0, 12.0])
    j = s.ids.index(next(x for x in s.ids if x.endswith("[1]")))
    assert s.labels[j] == pytest.approx(-0.5) and s.labels[i] == pytest.approx(1.5)
    assert any("non-standard split" in c and "70/10/20" in c for c in bundle.report.caveats)


def test_unaligned_mode_and_manifest_splits(tmp_path):
    _write_dir(tmp_path)
    (tmp_path / "mmfusion_csd.json").write_text(json.dumps({
        "text": "CMU_MOSI_TimestampedWordVectors.csd", "audio": "CMU_MOSI_COVAREP.csd",
        "vision": "CMU_MOSI_Visual_Facet_41.csd", "labels": "CMU_MOSI_Opinion_Labels.csd",
        "splits": {"train": [f"vid{i}" for i in range(6)], "valid": ["vid6", "vid7"], "test": ["vid8", "vid9"]}}))
    bundle = load_data(str(tmp_path), {"align": "none"})
    assert [len(bundle.splits[s]) for s in ("train", "valid", "test")] == [12, 4, 4]
    s = bundle.splits["train"]
    assert (s.lengths["audio"] == 15).all() and (s.lengths["vision"] == 6).all()


def test_ambiguous_directory_is_a_clear_error(tmp_path):
    _write_dir(tmp_path)
    (tmp_path / "CMU_MOSI_COVAREP.csd").rename(tmp_path / "features_b.csd")
    with pytest.raises(DataError, match="cannot tell which file holds audio"):
        load_data(f"csd:{tmp_path}")


def test_neg_inf_frames_count_as_zero_in_the_word_average_and_are_reported(tmp_path):
    _write_dir(tmp_path, n_videos=3)
    import h5py

    with h5py.File(tmp_path / "CMU_MOSI_COVAREP.csd", "r+") as h5:
        feats = h5["COVAREP/data/vid0/features"]
        feats[0:2, 0] = -np.inf  # frames 0 and 1 of the first audio channel
    bundle = load_data(f"csd:{tmp_path}")
    assert bundle.report.neg_inf == {"CMU_MOSI_COVAREP.csd": 2}
    assert "replaced 2 -inf values by 0 in CMU_MOSI_COVAREP.csd" in bundle.report.lines()
    split = next(s for s in bundle.splits.values() if "vid0[0]" in s.ids)
    i = split.ids.index("vid0[0]")
    # word 0 (0-0.5 s) averages audio frames 0..4 = (0, 0, 2, 3, 4) / 5 once the two -inf are zeros
    np.testing.assert_allclose(split.features["audio"][i, :3, 0], [1.8, 7.0, 12.0])
    np.testing.assert_allclose(split.features["audio"][i, :3, 1], [2.0, 7.0, 12.0])


@pytest.mark.parametrize(("corrupt", "says"), [
    ("dim", "feature size differs between videos (key 'data/vid3/features'): expected d=2 (as in data/vid0), got d=3"),
    ("nan", "contains NaN or +inf (key 'data/vid0/features')"),
    ("intervals", "intervals contain NaN or inf (key 'data/vid0/intervals')"),
])
def test_a_malformed_video_is_named_in_the_error(tmp_path, corrupt, says):
    import h5py

    _write_dir(tmp_path)
    path = tmp_path / "CMU_MOSI_Visual_Facet_41.csd"
    with h5py.File(path, "a") as h5:
        grp = h5["FACET 4.1/data/" + ("vid3" if corrupt == "dim" else "vid0")]
        feats, ivals = grp["features"][()], grp["intervals"][()]
        del grp["features"], grp["intervals"]
        if corrupt == "dim":
            feats = np.concatenate([feats, feats[:, :1]], 1)
        elif corrupt == "nan":
            feats[3, 1] = np.nan
        else:
            ivals[2, 0] = np.inf
        grp["features"], grp["intervals"] = feats, ivals
    with pytest.raises(DataError) as err:
        load_data(f"csd:{tmp_path}")
    assert "CMU_MOSI_Visual_Facet_41.csd" in str(err.value) and says in str(err.value), str(err.value)

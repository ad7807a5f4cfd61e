import pickle

import numpy as np
import pytest

from mmfusion.batch import IEMOCAP_EMOTIONS
from mmfusion.data import FusionDataset, load_data
from mmfusion.errors import DataError
from tests.helpers import write_iemocap_mult, write_mosi_mult


def test_mosi_shapes_masks_equal_true_lengths(tmp_path):
    path = tmp_path / "mosi_data_noalign.pkl"
    truth = write_mosi_mult(path)
    raw = pickle.loads(path.read_bytes())
    assert raw["train"]["text"].shape == (24, 50, 300)
    assert raw["train"]["audio"].shape == (24, 375, 5) and raw["train"]["vision"].shape == (24, 500, 20)
    # left padding: the first frames of a short sample are zero, the last one is not
    short = int(np.argmin(truth["train"].lengths["vision"]))
    assert not raw["train"]["vision"][short, 0].any() and raw["train"]["vision"][short, -1].any()

    bundle = load_data(f"mult:{path}")
    assert bundle.feature_dims == {"text": 300, "vision": 20, "audio": 5}
    assert bundle.task == "regression" and bundle.output_dim == 1
    for split in ("train", "valid", "test"):
        s = bundle.splits[split]
        batch = FusionDataset(s).collate(range(len(s)))
        for m in ("text", "vision", "audio"):
            np.testing.assert_array_equal(batch.masks[m].sum(1).numpy(), truth[split].lengths[m])
            np.testing.assert_array_equal(s.lengths[m], truth[split].lengths[m])
            # the frames themselves survive the move from left to right padding
            i = 3
            n = truth[split].lengths[m][i]
            np.testing.assert_allclose(s.features[m][i, :n], truth[split].features[m][i, :n])
        np.testing.assert_allclose(batch.labels.numpy(), truth[split].labels)
        assert batch.ids[0] == f"{split}_0"


def test_neg_inf_is_replaced_and_counted(tmp_path):
    path = tmp_path / "mosi.pkl"
    write_mosi_mult(path)
    raw = pickle.loads(path.read_bytes())
    raw["train"]["audio"][0, -1, :3] = -np.inf
    raw["test"]["audio"][2, -2, 0] = -np.inf
    path.write_bytes(pickle.dumps(raw))
    bundle = load_data(f"mult:{path}")
    assert bundle.report.neg_inf == {"train/audio": 3, "test/audio": 1}
    assert np.isfinite(bundle.splits["train"].features["audio"]).all()
    assert any("replaced 3 -inf" in line for line in bundle.report.lines())


def test_iemocap_labels_and_missing_ids(tmp_path):
    path = tmp_path / "iemocap_data_noalign.pkl"
    truth = write_iemocap_mult(path)
    raw = pickle.loads(path.read_bytes())
    assert raw["train"]["labels"].shape == (24, 4, 2) and "id" not in raw["train"]
    bundle = load_data(str(path))
    assert bundle.task == "emotion" and bundle.emotions == IEMOCAP_EMOTIONS and bundle.output_dim == 8
    np.testing.assert_array_equal(bundle.splits["valid"].labels, truth["valid"].labels)
    assert bundle.splits["test"].ids[:2] == ["test_00000", "test_00001"]
    assert bundle.feature_dims == {"text": 300, "vision": 35, "audio": 74}


@pytest.mark.parametrize("pair", [[0, 0], [1, 1], [0.5, 0.5]])
def test_iemocap_labels_must_be_one_hot_pairs(tmp_path, pair):
    """argmax would read (0, 0) and (1, 1) as 'absent' without a word: each is refused with where it is."""
    path = tmp_path / "iemocap_data_noalign.pkl"
    write_iemocap_mult(path)
    raw = pickle.loads(path.read_bytes())
    raw["valid"]["labels"] = raw["valid"]["labels"].astype(np.float64)
    raw["valid"]["labels"][2, 1] = pair
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError, match=r"not one-hot \(split 'valid', key 'labels'\).*at sample 2, emotion 1"):
        load_data(str(path))


def _corrupt(tmp_path, fn):
    path = tmp_path / "bad.pkl"
    write_mosi_mult(path, sizes=(6, 3, 3))
    raw = pickle.loads(path.read_bytes())
    fn(raw)
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError) as err:
        load_data(f"mult:{path}")
    return str(err.value)


def test_nan_names_file_split_key(tmp_path):
    def put_nan(raw):
        raw["valid"]["vision"][1, -1, 0] = np.nan

    msg = _corrupt(tmp_path, put_nan)
    assert "bad.pkl" in msg and "'valid'" in msg and "'vision'" in msg and "NaN" in msg and "sample 1" in msg


def test_wrong_rank_mismatched_n_missing_split_and_key(tmp_path):
    msg = _corrupt(tmp_path, lambda raw: raw["train"].update(text=raw["train"]["text"][:, :, 0]))
    assert "wrong rank" in msg and "'text'" in msg and "expected 3 dims" in msg and "(6, 50)" in msg
    msg = _corrupt(tmp_path, lambda raw: raw["test"].update(audio=raw["test"]["audio"][:2]))
    assert "'audio'" in msg and "N=3" in msg and "N=2" in msg
    msg = _corrupt(tmp_path, lambda raw: raw.pop("valid"))
    assert "missing split key" in msg and "'valid'" in msg
    msg = _corrupt(tmp_path, lambda raw: raw["train"].pop("labels"))
    assert "'labels'" in msg and "'train'" in msg


def test_all_zero_stream_is_a_missing_modality(tmp_path):
    path = tmp_path / "m.pkl"
    write_mosi_mult(path, sizes=(6, 3, 3))
    raw = pickle.loads(path.read_bytes())
    raw["train"]["vision"][2] = 0
    path.write_bytes(pickle.dumps(raw))
    bundle = load_data(f"mult:{path}")
    assert bundle.splits["train"].lengths["vision"][2] == 0
    assert bundle.report.empty["train/vision"] == 1


@pytest.mark.parametrize(("corrupt", "says"), [
    # rows of different lengths: numpy cannot even make an array of them
    (lambda raw: raw["valid"].update(labels=[[0.5], [1.0, 2.0], [0.0]]),
     "not a rectangular array (rows of different lengths?) (split 'valid', key 'labels')"),
    (lambda raw: raw["test"].update(labels=np.array([["a"]] * 3)), "not real numbers (split 'test', key 'labels')"),
    # complex values would lose their imaginary part in the cast to float32
    (lambda raw: raw["train"].update(audio=raw["train"]["audio"].astype(complex)),
     "not real numbers (split 'train', key 'audio'): expected float array (N, T, d), got dtype complex128"),
    # a float64 value beyond float32's range would become inf
    (lambda raw: raw["train"].update(vision=np.where(np.arange(20) == 0, 1e39,
                                                     raw["train"]["vision"].astype(np.float64))),
     "values beyond float32's range (split 'train', key 'vision')"),
    (lambda raw: raw["valid"].update(labels=np.full((3, 1, 1), 1e39)),
     "beyond float32's range (split 'valid', key 'labels')"),
    (lambda raw: raw["valid"].update(text=raw["valid"]["text"][:, :0]),
     "no frames or no features (split 'valid', key 'text')"),
])
def test_values_a_float32_array_cannot_hold_are_refused(tmp_path, corrupt, says):
    """Nothing is silently cast: ragged rows, strings, complex numbers and float64 values beyond float32's range
    are each refused with the split and key, before any model sees them."""
    msg = _corrupt(tmp_path, corrupt)
    assert "bad.pkl" in msg and says in msg, msg

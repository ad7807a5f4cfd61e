import pickle

import numpy as np
import pytest

from mmfusion.data import FusionDataset, load_data
from mmfusion.errors import DataError
from tests.helpers import write_mosi_mmsa


def test_mosi_mmsa_shapes_and_lengths(tmp_path):
    path = tmp_path / "unaligned_50.pkl"
    truth = write_mosi_mmsa(path)
    raw = pickle.loads(path.read_bytes())
    assert raw["train"]["text"].shape == (24, 50, 768) and raw["train"]["text_bert"].shape == (24, 3, 50)
    assert len(raw["train"]["audio_lengths"]) == 24
    bundle = load_data(str(path))  # recognised as MMSA by its file name
    assert bundle.source.startswith("mmsa:")
    assert bundle.feature_dims == {"text": 768, "vision": 20, "audio": 5}
    for split in ("train", "test"):
        batch = FusionDataset(bundle.splits[split]).collate(range(len(bundle.splits[split])))
        for m in ("text", "vision", "audio"):
            np.testing.assert_array_equal(batch.masks[m].sum(1).numpy(), truth[split].lengths[m])


def test_length_longer_than_sequence_is_an_error(tmp_path):
    path = tmp_path / "unaligned_50.pkl"
    write_mosi_mmsa(path, sizes=(5, 3, 3))
    raw = pickle.loads(path.read_bytes())
    raw["test"]["vision_lengths"][1] = 900
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError) as err:
        load_data(f"mmsa:{path}")
    msg = str(err.value)
    assert "'test'" in msg and "'vision_lengths'" in msg and "<= 500" in msg and "900" in msg


def test_neg_inf_in_audio_counted(tmp_path):
    path = tmp_path / "unaligned_50.pkl"
    write_mosi_mmsa(path, sizes=(5, 3, 3))
    raw = pickle.loads(path.read_bytes())
    raw["train"]["audio"][0, 0, :] = -np.inf
    path.write_bytes(pickle.dumps(raw))
    assert load_data(f"mmsa:{path}").report.neg_inf == {"train/audio": 5}

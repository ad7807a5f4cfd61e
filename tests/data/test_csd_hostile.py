"""Hostile inputs to the CMU-SDK reader: every option, manifest field and damaged structure is a named error (exit
status 2 through the CLI), never a traceback and never a silent fallback."""

import json

import h5py
import numpy as np
import pytest

from mmfusion.cli.main import main
from mmfusion.data import load_data
from mmfusion.errors import ConfigError, DataError
from tests.data.test_releases import MOSI_IDS, write_release


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosi")
    write_release(root, MOSI_IDS)
    return root


def _refused(capsys, data, *sets) -> str:
    argv = ["data", f"csd:{data}"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err  # one line
    return err


@pytest.mark.parametrize(("setting", "says"), [
    ("align=wordz", "unknown alignment (key 'align'): expected one of ['words', 'none'], got 'wordz'; "
                    "did you mean 'words'?"),
    ("max_len=-5", "expected a positive whole number of frames (key 'max_len'): expected an integer >= 1, got -5"),
    ("max_len=abc", "expected a number of frames, or one per modality (key 'max_len')"),
    ("max_len=[10, 20]", "expected a number of frames, or one per modality (key 'max_len')"),
    ("max_len=2.5", "expected a number of frames, or one per modality (key 'max_len')"),
    ("max_len={txt: 5}", "unknown modality (key 'max_len.txt')"),
    ("max_len={audio: 0}", "expected a positive whole number of frames (key 'max_len.audio')"),
    ("labels=emotion", "unknown label task (key 'labels'): expected one of ['sentiment', 'emotions'], got 'emotion'; "
                       "did you mean 'emotions'?"),
    ("audio=[COVAREP]", "expected a feature-set or file name (key 'audio')"),
    ("algin=none", "unknown option for csd data (key 'algin')"),
])
def test_a_bad_reader_option_is_a_named_error(folder, capsys, setting, says):
    err = _refused(capsys, folder, setting)
    assert says in err, err
    assert err.startswith("mmfusion data: error: --set: ")  # names where the value was set
    if "did you mean" in says or "algin" in setting:
        assert "did you mean" in err


def test_max_len_as_one_number_caps_every_modality(folder):
    bundle = load_data(f"csd:{folder}", {"max_len": 2})
    assert all(x.shape[1] == 2 for x in bundle.splits["train"].features.values())
    assert any("truncated to 2 text frames" in n for n in bundle.report.notes)


def _copy(folder, tmp_path):
    import shutil

    dest = tmp_path / "data"
    shutil.copytree(folder, dest)
    return dest


@pytest.mark.parametrize(("manifest", "says"), [
    ({"splits": {"train": MOSI_IDS[:3], "valid": MOSI_IDS[2:4], "test": MOSI_IDS[4:]}},
     f"a video is listed twice (key 'splits.valid'): expected each video in one split, once, got "
     f"'{MOSI_IDS[2]}' in 'train' and 'valid'"),
    ({"splits": {"train": MOSI_IDS, "tset": []}}, "unknown split (key 'splits.tset')"),
    ({"splits": [MOSI_IDS]}, "expected an object of video-id lists (key 'splits')"),
    ({"splits": {"train": "vid1"}}, "expected a list of video ids (strings) (key 'splits.train')"),
    ({"splits": {"train": [1, 2]}}, "expected a list of video ids (strings) (key 'splits.train')"),
    ({"splts": {}}, "unknown manifest key (key 'splts')"),
    ({"audio": "../CMU_MOSI_COVAREP.csd"}, "expected the name of a .csd file in this directory (key 'audio')"),
    ({"audio": 3}, "expected the name of a .csd file in this directory (key 'audio')"),
    ({"audio": "covarep_v2.csd"}, "the manifest names a file that is not there (key 'audio')"),
    ([{"text": "x.csd"}], "expected a JSON object"),
])
def test_a_bad_manifest_is_a_named_error(folder, tmp_path, capsys, manifest, says):
    data = _copy(folder, tmp_path)
    (data / "mmfusion_csd.json").write_text(json.dumps(manifest))
    err = _refused(capsys, data)
    assert "mmfusion_csd.json" in err and says in err, err
    if "tset" in json.dumps(manifest) or "splts" in json.dumps(manifest):
        assert "did you mean 'test'?" in err or "did you mean 'splits'?" in err


def test_a_non_utf8_manifest_is_a_named_error(folder, tmp_path, capsys):
    data = _copy(folder, tmp_path)
    (data / "mmfusion_csd.json").write_bytes(b'{"splits": {"train": ["caf\xe9"]}}')
    err = _refused(capsys, data)
    assert "mmfusion_csd.json: not UTF-8 text: expected a UTF-8 JSON object, got byte 0xe9 at offset 26" in err


def _rewrite(path, build):
    path.unlink()
    with h5py.File(path, "w") as h5:
        build(h5)


@pytest.mark.parametrize(("damage", "says"), [
    ("root", "expected an HDF5 group (key 'CMU_MOSI_COVAREP'): expected the root group holding data/ and metadata/, "
             "got a dataset of shape (4, 74)"),
    ("data", "expected an HDF5 group (key 'CMU_MOSI_COVAREP/data')"),
    ("video", f"expected an HDF5 group (key 'data/{MOSI_IDS[0]}'): expected a group holding features and "
              "intervals, got a dataset of shape (30, 74)"),
    ("features", f"expected an HDF5 dataset (key 'data/{MOSI_IDS[0]}/features')"),
])
def test_a_csd_with_datasets_where_groups_belong_is_a_named_error(folder, tmp_path, capsys, damage, says):
    data = _copy(folder, tmp_path)
    feats = np.zeros((30, 74))

    def build(h5):
        if damage == "root":
            h5["CMU_MOSI_COVAREP"] = np.zeros((4, 74))
            return
        root = h5.create_group("CMU_MOSI_COVAREP")
        if damage == "data":
            root["data"] = feats
            return
        vid = MOSI_IDS[0]
        if damage == "video":
            root[f"data/{vid}"] = feats
        else:
            root.create_group(f"data/{vid}/features")
            root[f"data/{vid}/intervals"] = np.zeros((30, 2))

    _rewrite(data / "CMU_MOSI_COVAREP.csd", build)
    err = _refused(capsys, data)
    assert "CMU_MOSI_COVAREP.csd: " in err and says in err, err


def test_labels_with_zero_columns_are_a_named_error(folder, tmp_path, capsys):
    data = _copy(folder, tmp_path)
    with h5py.File(data / "CMU_MOSI_Opinion_Labels.csd", "a") as h5:
        grp = h5[f"CMU_MOSI_Opinion_Labels/data/{MOSI_IDS[0]}"]
        del grp["features"]
        grp["features"] = np.zeros((2, 0))
    err = _refused(capsys, data)
    assert (f"CMU_MOSI_Opinion_Labels.csd: no feature columns (key 'data/{MOSI_IDS[0]}/features'): "
            "expected (frames, d) with d >= 1, got (2, 0)") in err


def test_reversed_label_intervals_are_a_named_error(folder, tmp_path, capsys):
    data = _copy(folder, tmp_path)
    with h5py.File(data / "CMU_MOSI_Opinion_Labels.csd", "a") as h5:
        iv = h5[f"CMU_MOSI_Opinion_Labels/data/{MOSI_IDS[1]}/intervals"]
        iv[...] = iv[()][:, ::-1]  # end before start
    err = _refused(capsys, data)
    assert (f"CMU_MOSI_Opinion_Labels.csd: interval ends before it starts (key 'data/{MOSI_IDS[1]}/intervals'): "
            "expected start <= end, got [1.5, 0] in row 0 (2 such rows)") in err


def test_errors_are_the_projects_own_classes(folder):
    with pytest.raises(ConfigError):
        load_data(f"csd:{folder}", {"align": "wordz"})
    with pytest.raises(DataError):
        load_data(f"csd:{folder}", {"vision": "NoSuchSet"})

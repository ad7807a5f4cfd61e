"""New clips without labels, in mmfusion's HDF5 format: predicted with a trained checkpoint, never scored."""

import csv

import h5py
import pytest

from mmfusion.cli.main import main
from mmfusion.data import load_data

SMALL = ["--set", "n_train=48", "--set", "n_valid=16", "--set", "n_test=16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabeled")
    labelled, new = root / "train.h5", root / "new.h5"
    assert main(["convert", "synthetic", str(labelled), *SMALL]) == 0
    with h5py.File(labelled, "r") as src, h5py.File(new, "w") as dst:  # the test clips alone, labels left out
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        src.copy(src["test"], dst, "test")
        del dst["test/labels"]
    return labelled, new


def test_the_reader_keeps_clips_without_labels_apart(files):
    _, new = files
    bundle = load_data(f"h5:{new}")
    assert list(bundle.splits) == ["test"] and not bundle.splits["test"].labeled
    assert "test 16" in bundle.describe() and bundle.feature_dims["text"] == 16


def test_predict_writes_no_label_column_and_test_and_fit_refuse(files, tmp_path, capsys):
    labelled, new = files
    out = tmp_path / "runs"
    assert main(["fit", "--model", "lf_lstm_tiny", "--data", f"h5:{labelled}", "--out", str(out), "--max-epochs", "1",
                 "--no-progress"]) == 0
    ckpt = next(out.glob("lf_lstm_tiny/*/seed_1111/checkpoints/best.ckpt"))
    assert main(["predict", "--ckpt", str(ckpt), "--data", f"h5:{new}", "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.reader((tmp_path / "p.csv").open()))
    assert rows[0] == ["id", "prediction"] and len(rows) == 1 + 16
    # the same clips with their labels get the same predictions
    assert main(["predict", "--ckpt", str(ckpt), "--data", f"h5:{labelled}", "--out", str(tmp_path / "q.csv")]) == 0
    with_labels = {r["id"]: float(r["prediction"]) for r in csv.DictReader((tmp_path / "q.csv").open())}
    for i, p in rows[1:]:
        assert float(p) == pytest.approx(with_labels[i], abs=1e-5)
    capsys.readouterr()
    assert main(["test", "--ckpt", str(ckpt), "--data", f"h5:{new}", "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert "new.h5" in err and "no labels" in err and "'test'" in err and not (tmp_path / "t.json").exists()
    assert main(["fit", "--model", "lf_lstm_tiny", "--data", f"h5:{new}", "--out", str(tmp_path / "r2")]) == 2
    assert "missing split" in capsys.readouterr().err and not (tmp_path / "r2").exists()
    assert main(["convert", f"h5:{new}", str(tmp_path / "x.pkl"), "--layout", "mult"]) == 2
    assert "missing split" in capsys.readouterr().err
    # converting to the HDF5 format keeps them unlabelled
    assert main(["convert", f"h5:{new}", str(tmp_path / "copy.h5")]) == 0
    assert not load_data(f"h5:{tmp_path / 'copy.h5'}").splits["test"].labeled

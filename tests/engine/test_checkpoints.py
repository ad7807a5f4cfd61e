"""A checkpoint is evaluated on the data it was trained on: its reader options travel with it.

A RAVDESS fold, a larger synthetic draw or a CSD alignment changes which clips a split holds; `test`, `predict`,
`explain` and `robustness` must not quietly read the data with other options than training did.
"""

import csv
import json
import os

import pytest
import torch

from mmfusion.cli.main import main
from mmfusion.data import effective_reader_options

DRAW = {"n_train": 64, "n_valid": 16, "n_test": 24, "background": 0.1}
FAST = ["--max-epochs", "1", "--batch-size", "8", "--no-progress", "--set", "model_args.hidden=8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    sets = [a for k, v in DRAW.items() for a in ("--set", f"data_args.{k}={v}")]
    assert main(["fit", "--model", "lf_lstm_tiny", "--data", "synthetic", "--out", str(out), *sets, *FAST]) == 0
    return out, out / "lf_lstm_tiny" / "synthetic" / "seed_1111"


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_test_and_predict_read_the_training_draw(trained, tmp_path, capsys):
    _, run = trained
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main(["test", "--ckpt", str(ckpt), "--data", "synthetic", "--out", str(tmp_path / "t.json")]) == 0
    assert "background=0.1" in capsys.readouterr().out  # says where the options came from
    tested = json.loads((tmp_path / "t.json").read_text())
    assert tested["data_args"] == DRAW
    assert tested["predictions"] == "t.predictions.csv"
    assert len(_rows(tmp_path / "t.predictions.csv")) == DRAW["n_test"]
    # the same clips as the test at the end of training, so the same predictions
    trained_pred = {r["id"]: float(r["prediction"]) for r in _rows(run / "predictions.csv")}
    for r in _rows(tmp_path / "t.predictions.csv"):
        assert float(r["prediction"]) == pytest.approx(trained_pred[r["id"]], abs=1e-5)
    # --set overrides one option and keeps the others
    assert main(["predict", "--ckpt", str(ckpt), "--data", "synthetic", "--set", "n_test=10",
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert len(_rows(tmp_path / "p.csv")) == 10


def test_checkpoints_without_recorded_options_fall_back_to_the_run_config(trained, tmp_path):
    _, run = trained
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    for key in ("data_args", "data_spec"):  # as written before checkpoints recorded their data
        del ckpt["hyper_parameters"]["meta"][key]
    old = run / "checkpoints" / "old.ckpt"
    torch.save(ckpt, old)
    assert main(["predict", "--ckpt", str(old), "--data", "synthetic", "--out", str(tmp_path / "p.csv")]) == 0
    assert len(_rows(tmp_path / "p.csv")) == DRAW["n_test"]  # from <run>/config.yaml
    moved = tmp_path / "moved.ckpt"  # away from its run directory nothing says, so the defaults apply
    torch.save(ckpt, moved)
    assert main(["predict", "--ckpt", str(moved), "--data", "synthetic", "--set", "n_test=7",
                 "--out", str(tmp_path / "m.csv")]) == 0
    assert len(_rows(tmp_path / "m.csv")) == 7


def test_robustness_reads_the_training_draw_and_refuses_other_options(trained, tmp_path, capsys):
    out, _ = trained
    # no --set: the options every checkpoint was trained with
    assert main(["robustness", "--runs", str(out), "--data", "synthetic", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    assert "reader options from the checkpoints' training runs: n_train=64" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["data_args"] == DRAW
    # options that read other data than training did are refused, naming every one that differs
    assert main(["robustness", "--runs", str(out), "--data", "synthetic", "--no-progress",
                 "--out", str(tmp_path / "r2"), "--set", "background=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best.ckpt" in err and "'background'" in err and "expected 0.1, got 0.5" in err
    assert "--set background=0.1 --set n_train=64 to read" in err
    assert not (tmp_path / "r2.json").exists()
    # the evaluation split's size is free: another iid draw of the same benchmark
    assert main(["robustness", "--runs", str(out), "--data", "synthetic", "--no-progress", "--out",
                 str(tmp_path / "r3"), "--set", "background=0.1", "--set", "n_train=64", "--set", "n_test=40"]) == 0
    assert json.loads((tmp_path / "r3.json").read_text())["data_args"]["n_test"] == 40


def test_robustness_reads_the_options_without_building_models_twice(trained, tmp_path, monkeypatch):
    """Finding the options the checkpoints share reads their hyper-parameters only; each model is built once, to be
    evaluated."""
    from mmfusion.engine import checkpoints, robustness

    out, run = trained
    built = []
    real = checkpoints.FusionSystem
    monkeypatch.setattr(checkpoints, "FusionSystem", lambda **hp: built.append(hp) or real(**hp))
    assert robustness.read_hparams(run / "checkpoints" / "best.ckpt")["meta"]["data_args"] == DRAW
    assert robustness.shared_training_options(robustness.trained_checkpoints(out, "synthetic"), "synthetic") == DRAW
    assert built == []
    assert main(["robustness", "--runs", str(out), "--data", "synthetic", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    assert len(built) == 1


def test_effective_options_fill_in_the_reader_defaults():
    assert effective_reader_options("synthetic", {"n_train": 1500}) == effective_reader_options("synthetic")
    assert effective_reader_options("synthetic:emotion")["task"] == "emotion"
    assert effective_reader_options("ravdess:/data/RAVDESS")["fold"] == 0
    assert effective_reader_options("ravdess:/data/RAVDESS", {"fold": 3})["fold"] == 3
    assert effective_reader_options("mult:x.pkl") == {}


def test_a_checkpoint_that_would_run_code_is_refused_and_not_run(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": Payload(), "state_dict": {}}, evil)
    assert main(["predict", "--ckpt", str(evil), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evil.ckpt" in err and "nothing in it was run" in err and "system" in err
    assert "weights_only` set to `False`" not in err  # no advice to load it unrestricted
    assert not marker.exists()


def test_hyper_parameters_read_from_either_checkpoint_format(tmp_path):
    """read_hparams maps the tensors of torch.save's zip format and reads older (legacy) files whole."""
    from mmfusion.engine.checkpoints import read_hparams

    for zipped in (True, False):
        path = tmp_path / f"zip_{zipped}.ckpt"
        torch.save({"hyper_parameters": {"model_name": "x", "zipped": zipped}, "state_dict": {"w": torch.ones(3)}},
                   path, _use_new_zipfile_serialization=zipped)
        assert read_hparams(path) == {"model_name": "x", "zipped": zipped}


def _altered(run, tmp_path, name, change):
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    change(ckpt)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def _first_weight(ckpt):
    return next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())


@pytest.mark.parametrize(("change", "says"), [
    (lambda c: c["state_dict"].__setitem__(_first_weight(c), c["state_dict"][_first_weight(c)][..., :1].clone()),
     "its weights do not fit the model its hyper-parameters describe (key 'state_dict'): expected lf_lstm_tiny's "
     "parameters, got size mismatch for"),
    (lambda c: c["state_dict"].pop(_first_weight(c)), "got Missing key(s) in state_dict"),
    (lambda c: c["state_dict"][_first_weight(c)].view(-1).__setitem__(0, float("nan")),
     "non-finite weights (NaN or inf) (key 'state_dict/"),
    (lambda c: c["hyper_parameters"].__setitem__("model_name", "lf_lstm_huge"),
     "its hyper-parameters do not describe a model this version builds (unknown model"),
    (lambda c: c["hyper_parameters"].__setitem__("colour", "blue"),
     "its hyper-parameters are not an mmfusion model's (TypeError"),
])
def test_a_damaged_or_foreign_checkpoint_is_one_error_naming_the_file(trained, tmp_path, capsys, change, says):
    """Weights that do not fit, NaN weights and hyper-parameters no model is built from: one line, not a traceback
    from load_state_dict, and no NaN metrics written."""
    _, run = trained
    path = _altered(run, tmp_path, "damaged.ckpt", change)
    assert main(["test", "--ckpt", str(path), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged.ckpt" in err and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.ckpt"]  # nothing written


def test_results_of_a_checkpoint_outside_a_run_go_beside_it(trained, tmp_path):
    """Beside ``<run>/checkpoints/x.ckpt`` results go to ``<run>``; a checkpoint copied elsewhere writes into its
    own folder, never into the folder above it."""
    _, run = trained
    here = tmp_path / "shared" / "models"
    here.mkdir(parents=True)
    path = _altered(run, here, "model.ckpt", lambda c: None)
    assert main(["test", "--ckpt", str(path), "--data", "synthetic"]) == 0
    assert main(["predict", "--ckpt", str(path), "--data", "synthetic", "--split", "valid"]) == 0
    assert sorted(p.name for p in here.iterdir()) == ["model.ckpt", "test_synthetic.metrics.json",
                                                      "test_synthetic.predictions.csv",
                                                      "valid_synthetic.predictions.csv"]
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["models"]

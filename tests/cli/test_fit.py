import csv
import json
import math

import pytest

from mmfusion import runtime
from mmfusion.cli.main import main
from tests.helpers import write_iemocap_mult, write_mosi_mmsa, write_mosi_mult

FAST = ["--max-epochs", "1", "--batch-size", "8", "--no-progress", "--set", "model_args.hidden=8"]


@pytest.mark.parametrize("layout", ["mult", "mmsa", "iemocap"])
def test_fit_runs_on_published_shapes(tmp_path, layout, capsys, monkeypatch):
    if layout == "mult":
        path = tmp_path / "mosi_data_noalign.pkl"
        write_mosi_mult(path)
        spec = f"mult:{path}"
    elif layout == "mmsa":
        path = tmp_path / "MOSI" / "unaligned_50.pkl"
        path.parent.mkdir()
        write_mosi_mmsa(path)
        spec = f"mmsa:{path}"
    else:
        path = tmp_path / "iemocap_data_noalign.pkl"
        write_iemocap_mult(path)
        spec = f"mult:{path}"
    out = tmp_path / "runs"
    assert main(["fit", "--model", "lf_lstm", "--data", spec, "--out", str(out), *FAST]) == 0
    run = next(out.glob("lf_lstm/*/seed_1111"))
    metrics = json.loads((run / "metrics.json").read_text())
    rows = list(csv.reader((run / "predictions.csv").open()))
    assert len(rows) == 1 + 8 and rows[0][0] == "id"
    table = [dict(zip(rows[0], r)) for r in rows[1:]]
    # the test metrics are those of the predictions written next to them
    if layout == "iemocap":
        for e in ("neutral", "happy", "sad", "angry"):
            hits = [r[f"prediction_{e}"] == r[f"label_{e}"] for r in table]
            assert metrics[f"acc_{e}"] == pytest.approx(sum(hits) / len(hits)) and f"f1_{e}" in metrics
    else:
        pred = [float(r["prediction"]) for r in table]
        label = [float(r["label"]) for r in table]
        assert metrics["mae"] == pytest.approx(sum(abs(p - y) for p, y in zip(pred, label)) / 8, abs=1e-5)
        for k in ("corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0"):
            assert k in metrics
    for f in ("config.yaml", "summary.md", "env.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / f).exists(), f
    env = json.loads((run / "env.json").read_text())
    assert "torch" in env and "git_commit" in env
    assert "Bayes-optimal" not in capsys.readouterr().out  # only the built-in benchmark knows its ceiling

    # test / predict from the checkpoint
    ckpt = run / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    assert main(["test", "--ckpt", str(ckpt), "--data", spec, "--out", str(tmp_path / "t.json")]) == 0
    assert "±" not in capsys.readouterr().out  # one checkpoint: values, not a mean ± std over seeds
    tested = json.loads((tmp_path / "t.json").read_text())
    assert tested["split"] == "test"
    assert len(list(csv.reader((tmp_path / "t.predictions.csv").open()))) == 1 + 8
    # a metrics path that would collide with (or read as) a predictions CSV is refused before anything is written
    assert main(["test", "--ckpt", str(ckpt), "--data", spec, "--out", str(tmp_path / "t.csv")]) == 2
    assert "expected a path ending in .json, got .csv" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
    assert main(["predict", "--ckpt", str(ckpt), "--data", spec, "--split", "valid",
                 "--out", str(tmp_path / "p.csv")]) == 0
    assert len(list(csv.reader((tmp_path / "p.csv").open()))) == 1 + 8
    if layout == "mult":  # --compile routes the model through torch.compile and predicts the same
        compiled = []

        def compile_model(model, real=runtime.compile_model):
            compiled.append(model)
            return real(model, backend="aot_eager")  # graph capture as with inductor, without generating C++

        monkeypatch.setattr(runtime, "compile_model", compile_model)
        assert main(["predict", "--ckpt", str(ckpt), "--data", spec, "--split", "valid", "--compile",
                     "--out", str(tmp_path / "pc.csv")]) == 0
        assert compiled
        plain, fast = (list(csv.DictReader((tmp_path / f).open())) for f in ("p.csv", "pc.csv"))
        assert [r["id"] for r in plain] == [r["id"] for r in fast]
        for a, b in zip(plain, fast):
            assert float(a["prediction"]) == pytest.approx(float(b["prediction"]), abs=1e-5)


def test_several_seeds_give_mean_and_std_with_bayes_row(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["fit", "--model", "lf_lstm_tiny", "--data", "synthetic", "--seeds", "1", "2", "--out", str(out),
            "--set", "data_args.n_train=64", "--set", "data_args.n_valid=16", "--set", "data_args.n_test=32", *FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Bayes-optimal" in printed and "±" in printed
    summary = json.loads((out / "lf_lstm_tiny" / "synthetic" / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and summary["metrics"]["corr"]["std"] >= 0
    assert summary["bayes"]["corr"] > 0.9
    # rerunning without --resume refuses to overwrite; with --resume it reuses the finished runs
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--resume", "--no-progress"]) == 0  # how it is shown is not a setting of the run
    assert "finished earlier, reusing its results" in capsys.readouterr().out
    # other settings would report the finished runs' results under settings they did not come from
    before = (out / "lf_lstm_tiny" / "synthetic" / "seed_1" / "metrics.json").read_text()
    assert main(args + ["--resume", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "seed_1/config.yaml" in err and "'train.lr'" in err and "expected 0.001, got 0.1" in err
    assert (out / "lf_lstm_tiny" / "synthetic" / "seed_1" / "metrics.json").read_text() == before


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["fit", "--data", f"mult:{tmp_path / 'missing.pkl'}", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.pkl: file not found" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trian: {}\n")
    assert main(["fit", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "c.yaml" in err and "'trian'" in err


@pytest.mark.filterwarnings("ignore:.*AMP with fp16 is not supported on CPU")
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_with_gradient_clipping(tmp_path, precision):
    # Lightning cannot clip the gradients of an optimizer that unscales them itself (fused Adam): mixed precision
    # with a config's grad_clip must still train (on a CPU 16-mixed runs as bf16-mixed)
    out = tmp_path / "runs"
    assert main(["fit", "--model", "mea_tiny", "--data", "synthetic", "--precision", precision, "--out", str(out),
                 "--set", "train.grad_clip=0.8", "--set", "data_args.n_train=48", "--set", "data_args.n_valid=16",
                 "--set", "data_args.n_test=16", "--max-epochs", "1", "--batch-size", "16", "--no-progress"]) == 0
    metrics = json.loads((out / "mea_tiny" / "synthetic" / "seed_1111" / "metrics.json").read_text())
    assert all(math.isfinite(metrics[k]) for k in ("mae", "corr"))


def test_resume_with_a_larger_epoch_budget_trains_on(tmp_path, capsys):
    import torch

    out = tmp_path / "runs"
    args = ["fit", "--model", "lf_lstm_tiny", "--data", "synthetic", "--out", str(out), "--batch-size", "16",
            "--no-progress", "--set", "data_args.n_train=64", "--set", "data_args.n_valid=16",
            "--set", "data_args.n_test=16", "--set", "train.patience=0"]
    run = out / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    assert main(args + ["--max-epochs", "2"]) == 0
    assert main(args + ["--max-epochs", "3", "--resume"]) == 0
    assert "training on from 2 to 3 epochs" in capsys.readouterr().out.replace("\n", " ")
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * (64 // 16)  # one more epoch, not three afresh
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["resumed_from_epoch"] == 1
    assert json.loads((run / "metrics_2_epochs.json").read_text())["epochs_run"] == 2  # the earlier results stay
    # a smaller budget is another setting; a run that stopped early would not train further
    assert main(args + ["--max-epochs", "2", "--resume"]) == 2
    assert "'train.max_epochs'" in capsys.readouterr().err
    metrics["epochs_run"] = 2  # as if early stopping had ended it after 2 of its 3 epochs
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(args + ["--max-epochs", "5", "--resume"]) == 2
    assert "stopped early after 2 epochs" in capsys.readouterr().err
    # an interrupted run (no results yet) whose last checkpoint is damaged: named, with how to start over, not
    # torch.load's traceback
    (run / "metrics.json").unlink()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"half a file")
    assert main(args + ["--max-epochs", "3", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.ckpt: cannot resume from this checkpoint" in err and "delete it" in err, err

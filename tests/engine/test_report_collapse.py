"""A model whose predictions collapsed to one value is reported as such, not only as Corr 0."""

import json

from mmfusion.cli.main import main
from mmfusion.engine import system as system_module

SMALL = ["--set", "data_args.n_train=64", "--set", "data_args.n_valid=16", "--set", "data_args.n_test=16",
         "--no-progress", "--max-epochs", "1"]


def test_constant_predictions_are_flagged_by_fit_and_test(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    assert main(["fit", "--model", "lf_lstm_tiny", "--out", str(out), *SMALL]) == 0
    run = out / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    assert json.loads((run / "metrics.json").read_text())["warnings"] == []  # a trained model varies
    assert "Warning" not in (run / "summary.md").read_text()

    predict_step = system_module.FusionSystem.predict_step

    def collapsed(self, batch, batch_idx):
        out = predict_step(self, batch, batch_idx)
        return {**out, "pred": out["pred"] * 0 + 0.25}

    monkeypatch.setattr(system_module.FusionSystem, "predict_step", collapsed)
    capsys.readouterr()
    assert main(["fit", "--model", "lf_lstm_tiny", "--out", str(tmp_path / "again"), "--seeds", "1111", "7",
                 *SMALL]) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert "warning: the predictions are one value (0.25) for all 16 samples" in printed
    again = tmp_path / "again" / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    metrics = json.loads((again / "metrics.json").read_text())
    assert metrics["corr"] == 0.0 and "collapsed to a constant" in metrics["warnings"][0]
    assert "**Warning:** the predictions are one value" in (again / "summary.md").read_text()
    summary = (again.parent / "summary.md").read_text()  # the seeds' summary names both
    assert "**Runs to look at**" in summary and "- lf_lstm_tiny, seed 7: the predictions are one value" in summary
    assert len(json.loads((again.parent / "summary.json").read_text())["notes"]) == 2

    report = tmp_path / "test.json"
    # (the checkpoint's reader options, the small draw, are inherited)
    assert main(["test", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "--data", "synthetic",
                 "--out", str(report)]) == 0
    assert "warning: the predictions are one value" in capsys.readouterr().out.replace("\n", "")
    assert "collapsed to a constant" in json.loads(report.read_text())["warnings"][0]

"""A run whose loss becomes NaN or infinite stops there and never reports metrics of NaN predictions."""

import json
import math

import torch

from mmfusion.cli.main import main
from mmfusion.engine import system as system_module

SMALL = ["--set", "data_args.n_train=64", "--set", "data_args.n_valid=16", "--set", "data_args.n_test=16",
         "--no-progress", "--set", "train.grad_clip=0"]


def test_divergence_in_the_first_epoch_is_an_error_not_nan_metrics(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["fit", "--model", "lf_lstm_tiny", "--out", str(out), "--max-epochs", "3", "--lr", "1e30", *SMALL])
    err = capsys.readouterr().err
    assert code == 2 and "training diverged" in err and "before any epoch with a finite validation loss" in err
    assert "'train.lr'" in err and "Traceback" not in err
    assert not list(out.glob("*/*/seed_*/metrics.json"))


def test_divergence_after_a_good_epoch_stops_and_tests_the_best_checkpoint(tmp_path, capsys, monkeypatch):
    step = system_module.FusionSystem._step

    def nan_from_the_second_epoch(self, batch, stage):
        total, pred = step(self, batch, stage)
        if stage == "train" and self.current_epoch >= 1:
            return total * float("nan"), pred
        return total, pred

    monkeypatch.setattr(system_module.FusionSystem, "_step", nan_from_the_second_epoch)
    out = tmp_path / "runs"
    assert main(["fit", "--model", "lf_lstm_tiny", "--out", str(out), "--max-epochs", "4", *SMALL]) == 0
    assert "training diverged (loss nan at epoch 1" in capsys.readouterr().out.replace("\n", "")
    run = out / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["diverged"]["epoch"] == 1 and metrics["best_epoch"] == 0 and math.isfinite(metrics["corr"])
    summary = (run.parent / "summary.md").read_text()
    assert "- lf_lstm_tiny, seed 1111: training diverged (loss nan at epoch 1" in summary
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] <= 1  # stopped in the epoch it diverged, not trained on to the budget
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())  # the NaN step made no update

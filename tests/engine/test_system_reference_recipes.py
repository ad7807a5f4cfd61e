"""The MSAF authors' recipes: checkpoint selection on the test split (train.reference_selection) and a constant
learning rate (train.lr_schedule=constant)."""

import csv
import json

import pytest

from mmfusion.cli.main import main
from mmfusion.engine.system import FusionSystem

SMALL = ["--model", "lf_lstm_tiny", "--data", "synthetic", "--max-epochs", "3", "--batch-size", "16", "--no-progress",
         "--threads", "1", "--set", "data_args.n_train=64", "--set", "data_args.n_valid=16",
         "--set", "data_args.n_test=32", "--set", "train.patience=0"]


def _val_and_test(out):
    run = out / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    rows = list(csv.DictReader(open(run / "logs" / "version_0" / "metrics.csv")))
    val = [float(r["val_corr"]) for r in rows if r.get("val_corr")]
    return val, json.loads((run / "metrics.json").read_text())["corr"]


def test_reference_selection_picks_the_epoch_best_on_the_test_split(tmp_path):
    assert main(["fit", *SMALL, "--set", "train.reference_selection=true", "--out", str(tmp_path / "ref")]) == 0
    val, test = _val_and_test(tmp_path / "ref")
    assert len(val) == 3 and test == pytest.approx(max(val), abs=1e-6)  # "validation" was the test split
    assert main(["fit", *SMALL, "--out", str(tmp_path / "honest")]) == 0
    val, test = _val_and_test(tmp_path / "honest")
    assert all(abs(v - test) > 1e-9 for v in val)  # validated on its own split


def test_constant_learning_rate_has_no_scheduler():
    args = ("lf_lstm_tiny", {}, {"text": 8, "vision": 4, "audio": 4}, 1, "regression")
    assert "lr_scheduler" not in FusionSystem(*args, train={"lr_schedule": "constant"}).configure_optimizers()
    assert "lr_scheduler" in FusionSystem(*args, train={}).configure_optimizers()


def test_branch_losses_train_each_ntu_branch_on_its_own_loss():
    import torch

    from mmfusion.batch import Batch

    torch.manual_seed(0)
    args = ("msaf_ntu_tiny", {}, {"rgb": 32, "skeleton": 25}, 60, "classification")
    system = FusionSystem(*args, train={"branch_losses": True})
    system.log = lambda *a, **k: None  # outside a Trainer
    batch = Batch({"rgb": torch.rand(2, 3, 8, 32, 32), "skeleton": torch.randn(2, 2, 3, 16, 25)}, {},
                  torch.tensor([3, 7]), ["a", "b"])
    system.eval()  # no dropout: the same forward twice
    total, _ = system._step(batch, "train")
    out = system(batch)
    ce = torch.nn.functional.cross_entropy
    want = ce(out["branches"]["rgb"], batch.labels) + ce(out["branches"]["skeleton"], batch.labels)
    torch.testing.assert_close(total, want)
    assert not torch.allclose(total, ce(out["pred"], batch.labels))

"""`--devices N`: Lightning runs the command line once per device; the result must be one run, scored on whole splits.

Two CPU processes (gloo) stand in for two GPUs. The command runs as a subprocess because Lightning starts the further
processes by running the same command line again.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_two_devices_give_one_run_scored_on_whole_splits(tmp_path):
    out = tmp_path / "runs"
    n_valid, n_test = 17, 23  # odd: the distributed sampler pads each device's share
    cmd = [sys.executable, "-m", "mmfusion", "fit", "--model", "lf_lstm_tiny", "--data", "synthetic",
           "--accelerator", "cpu", "--devices", "2", "--max-epochs", "1", "--batch-size", "8", "--threads", "1",
           "--no-progress", "--out", str(out), "--set", "data_args.n_train=48",
           "--set", f"data_args.n_valid={n_valid}", "--set", f"data_args.n_test={n_test}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("Bayes-optimal") == 1  # one table: the further process prints nothing
    run = out / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    # the test split is scored whole, once
    rows = list(csv.DictReader((run / "predictions.csv").open()))
    assert len(rows) == n_test and len({r["id"] for r in rows}) == n_test
    # validation metrics were computed over the whole split (every device's share, padding dropped): the logged
    # MAE equals the checkpoint's MAE on the validation split from one process
    logged = [r for r in csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()) if r["val_mae"]]
    assert len(logged) == 1
    pred_file = tmp_path / "valid.csv"
    ckpt = run / "checkpoints" / "best.ckpt"
    done = subprocess.run([sys.executable, "-m", "mmfusion", "predict", "--ckpt", str(ckpt), "--data", "synthetic",
                           "--split", "valid", "--out", str(pred_file)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    valid = list(csv.DictReader(pred_file.open()))
    assert len(valid) == n_valid
    err = np.array([float(r["prediction"]) - float(r["label"]) for r in valid])
    assert abs(float(logged[0]["val_mae"]) - np.abs(err).mean()) < 1e-5
    assert json.loads((run / "metrics.json").read_text())["seed"] == 1111


@pytest.mark.slow
def test_mea_with_the_small_data_settings_trains_on_two_devices(tmp_path):
    """disc_steps refits D_m inside the forward pass and agnostic_norm calibrates before validation: both run under
    DDP (the refits average their gradients over the processes; tests/modules/test_discriminators.py)."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "mmfusion", "fit", "--model", "mea_tiny", "--data", "synthetic",
           "--config", str(ROOT / "configs" / "mea" / "small_data.yaml"),
           "--accelerator", "cpu", "--devices", "2", "--max-epochs", "1", "--batch-size", "8", "--threads", "1",
           "--no-progress", "--out", str(out), "--set", "data_args.n_train=48", "--set", "data_args.n_valid=16",
           "--set", "data_args.n_test=16"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "mea_tiny" / "synthetic" / "seed_1111" / "metrics.json").read_text())
    assert {"disc_acc_agnostic_valid", "probe_acc_agnostic_valid"} <= set(metrics)

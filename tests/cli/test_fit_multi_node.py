"""Two processes train the same global batches as one: `--devices 2` (Lightning starts the second process) and
`--num-nodes 2` (two `torchrun --nnodes 2` launches on localhost, one process each, gloo) follow the one-process run
epoch by epoch, to floating-point summation order.

Tolerance: 1e-5 absolute on every logged validation metric and on the test metrics (float32 training; the runs
differ only in the order gradients and losses are summed)."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

TOL = 1e-5
DATA = ["--set", "data_args.n_train=48", "--set", "data_args.n_valid=16", "--set", "data_args.n_test=20"]
FIT = ["fit", "--model", "lf_lstm_tiny", "--data", "synthetic", "--accelerator", "cpu", "--max-epochs", "2",
       "--batch-size", "16", "--threads", "1", "--no-progress", "--set", "model_args.dropout=0", *DATA]
# dropout off: each process would draw its own masks for its share of the batch


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE",
                                                              "MASTER_ADDR", "MASTER_PORT")}
    env["MMFUSION_KERNELS"] = "0"
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out):
    run = out / "lf_lstm_tiny" / "synthetic" / "seed_1111"
    logged = [r for r in csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()) if r["val_mae"]]
    return logged, json.loads((run / "metrics.json").read_text()), list(csv.DictReader((run / "predictions.csv")
                                                                                        .open()))


def _same(a, b):
    (log_a, met_a, pred_a), (log_b, met_b, pred_b) = a, b
    assert len(log_a) == len(log_b) == 2
    for ra, rb in zip(log_a, log_b):
        for key in ("val_loss", "val_mae", "val_corr", "val_acc2_non0"):
            assert abs(float(ra[key]) - float(rb[key])) < TOL, (key, ra[key], rb[key])
    for key in ("mae", "corr", "acc7", "best_val_loss"):
        assert abs(met_a[key] - met_b[key]) < TOL, (key, met_a[key], met_b[key])
    assert met_a["epochs_run"] == met_b["epochs_run"] == 2 and met_a["best_epoch"] == met_b["best_epoch"]
    assert [r["id"] for r in pred_a] == [r["id"] for r in pred_b] and len(pred_a) == 20  # the test split, whole


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "runs"
    done = subprocess.run([sys.executable, "-m", "mmfusion", *FIT, "--out", str(out)], capture_output=True,
                          text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    return _run(out)


@pytest.mark.parametrize("strategy", ["auto", "ddp_spawn"])
def test_two_devices_train_as_one_process(tmp_path, one_process, strategy):
    out = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "mmfusion", *FIT, "--devices", "2", "--strategy", strategy,
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    _same(_run(out), one_process)


def test_two_nodes_under_torchrun_train_as_one_process(tmp_path, one_process):
    out, port = tmp_path / "runs", _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
                               "1", "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port",
                               str(port), "-m", "mmfusion", *FIT, "--num-nodes", "2", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
             for rank in (0, 1)]
    outputs = [p.communicate(timeout=600) for p in nodes]
    for p, (_, err) in zip(nodes, outputs):
        assert p.returncode == 0, err[-2000:]
    assert outputs[0][0].count("Bayes-optimal") == 1 and "Bayes-optimal" not in outputs[1][0]  # rank 0 reports
    _same(_run(out), one_process)


def test_fsdp_on_a_cpu_is_refused_by_name(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mmfusion", *FIT, "--strategy", "fsdp", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 2 and "'strategy'" in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # refused before any run directory

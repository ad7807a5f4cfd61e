"""A training process killed with SIGKILL mid-epoch continues with --resume from its last checkpoint, and ends
exactly as the uninterrupted run does; a second process on a run that is training is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ARGS = ["fit", "--model", "lf_lstm", "--data", "synthetic", "--max-epochs", "5", "--batch-size", "16",
        "--no-progress", "--threads", "1", "--set", "train.patience=0", "--set", "data_args.n_train=480",
        "--set", "data_args.n_valid=32", "--set", "data_args.n_test=32"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmfusion", *ARGS, "--out", str(out), *extra]


COMPARED = ("mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "best_epoch", "best_val_loss", "epochs_run")


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert path.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"


def test_sigkill_mid_epoch_then_resume_equals_one_run_and_a_second_process_is_refused(tmp_path):
    # the uninterrupted run; while it trains, a second process on its directory is refused, naming its PID
    whole = tmp_path / "whole"
    whole_run = whole / "lf_lstm" / "synthetic" / "seed_1111"
    proc = subprocess.Popen(_cmd(whole), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(whole_run / "checkpoints" / "last.ckpt", proc)
        os.kill(proc.pid, signal.SIGSTOP)  # paused, still holding its lock, however long the second one takes
        try:
            second = subprocess.run(_cmd(whole, "--resume"), capture_output=True, text=True, timeout=400)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=400) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"{whole_run}: this run directory is in use by process {proc.pid}" in second.stderr
    whole_metrics = json.loads((whole_run / "metrics.json").read_text())  # the first one finished intact
    assert whole_metrics["resumed_from_epoch"] is None and "corr" in whole_metrics

    out = tmp_path / "runs"
    run = out / "lf_lstm" / "synthetic" / "seed_1111"
    last = run / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert last.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"
        first = torch.load(last, map_location="cpu", weights_only=True)
        # wait a fraction of an epoch so the kill lands mid-epoch, well before the next checkpoint
        time.sleep(0.5)
        assert proc.poll() is None, "training finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "metrics.json").exists()
    killed_at = torch.load(last, map_location="cpu", weights_only=True)
    assert killed_at["epoch"] < 4 and first["epoch"] <= killed_at["epoch"]

    done = subprocess.run(_cmd(out, "--resume"), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {last}" in done.stdout.replace("\n", "")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == killed_at["epoch"]
    final = torch.load(last, map_location="cpu", weights_only=True)
    steps_per_epoch = 480 // 16
    # epochs were continued, not restarted: exactly max_epochs worth of optimiser steps in total
    assert final["epoch"] == 4 and final["global_step"] == 5 * steps_per_epoch
    # Adam's step counter went on from the killed run's (a fresh optimiser would count only the resumed epochs)
    adam_steps = {float(s["step"]) for s in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {5.0 * steps_per_epoch}
    assert {float(s["step"]) for s in killed_at["optimizer_states"][0]["state"].values()} == {
        (killed_at["epoch"] + 1.0) * steps_per_epoch}
    # the same batches in the same order, the same dropout masks: bit for bit the uninterrupted run
    assert {k: metrics[k] for k in COMPARED} == {k: whole_metrics[k] for k in COMPARED}
    whole_final = torch.load(whole_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["state_dict"].keys() == whole_final["state_dict"].keys()
    for name, value in final["state_dict"].items():
        assert torch.equal(value, whole_final["state_dict"][name]), name
    assert (run / "predictions.csv").read_text() == (whole_run / "predictions.csv").read_text()


def test_ctrl_c_says_interrupted_and_how_to_continue(tmp_path):
    """Lightning turns Ctrl-C into sys.exit(1); the command must still say it was interrupted (status 130)."""
    out = tmp_path / "runs"
    last = out / "lf_lstm" / "synthetic" / "seed_1111" / "checkpoints" / "last.ckpt"
    # as from a terminal: SIGINT has its default action (a background or xdist parent may ignore it)
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert last.exists() and proc.poll() is None, "no checkpoint while training ran"
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "mmfusion fit: interrupted; the finished epochs are in the last checkpoint: rerun with --resume" in err
    assert "Traceback" not in err
    assert not (last.parent.parent / "metrics.json").exists()

"""A training process killed with SIGKILL mid-epoch continues with --resume from its last checkpoint."""

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


def test_sigkill_mid_epoch_then_resume(tmp_path):
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

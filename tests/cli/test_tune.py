"""`mmfusion tune`: a bad search space is refused by name; two workers share one SQLite study, a killed worker's
trial is failed and the study completes with exactly N finished trials, none run twice; the exported best config
reproduces its trial's validation loss with `fit`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="mmfusion tune needs the tune extra: pip install -e '.[tune]'")
from optuna.trial import TrialState  # noqa: E402

from mmfusion.cli.main import main  # noqa: E402

DATA = ["--data", "synthetic", "--set", "data_args.n_train=64", "--set", "data_args.n_valid=16",
        "--set", "data_args.n_test=16"]
BASE = ["--model", "lf_lstm_tiny", *DATA, "--threads", "1"]


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, named", [
    ("model_args.hiden: {choice: [8, 16]}\n", ["model_args.hiden", "did you mean 'hidden'"]),
    ("train.lr: {log_float: [3.0e-3, 1.0e-4]}\n", ["train.lr", "empty range"]),
    ("train.lr: {log_float: [0, 1.0e-3]}\n", ["train.lr", "positive"]),
    ("model_args.dropout: {float: [0.0, 1.5]}\n", ["model_args.dropout", "out of range"]),
    ("model_args.hidden: {flaot: [8, 16]}\n", ["model_args.hidden", "did you mean 'float'"]),
    ("model_args.hidden: {int: [8.5, 16]}\n", ["model_args.hidden", "two integers"]),
    ("data_args.n_train: {int: [10, 20]}\n", ["data_args.n_train", "model_args.KEY"]),
    ("train.devices: {choice: [1, 2]}\n", ["train.devices", "one process"]),
])
def test_a_bad_space_is_refused_by_name(tmp_path, capsys, text, named):
    space = _space(tmp_path, text)
    code = main(["tune", *BASE, "--space", space, "--trials", "2", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and space in err and "Traceback" not in err
    for part in named:
        assert part in err, err
    assert not (tmp_path / "runs" / "tune").exists() or not any((tmp_path / "runs" / "tune").rglob("trial_*"))


def test_a_setting_the_model_cannot_take_is_refused_before_any_trial(tmp_path, capsys):
    space = _space(tmp_path, "model_args.num_heads: {choice: [2, 4]}\n")  # 4 does not divide MulT's width 30
    code = main(["tune", "--model", "mult", *DATA, "--space", space, "--trials", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "model_args.num_heads" in err and "cannot be built" in err, err


def _worker(tmp_path, n, extra=()):
    cmd = [sys.executable, "-m", "mmfusion", "tune", *BASE, "--space", str(tmp_path / "space.yaml"), "--trials",
           str(n), "--max-epochs", "3", "--pruner", "none", "--heartbeat", "1", "--study", "s",
           "--out", str(tmp_path / "runs"), *extra]
    env = {**os.environ, "MMFUSION_KERNELS": "0"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_workers_a_killed_one_and_the_best_config(tmp_path):
    n = 5
    _space(tmp_path, "train.lr: {log_float: [1.0e-4, 3.0e-3]}\nmodel_args:\n  hidden: {choice: [8, 16]}\n")
    study_dir = tmp_path / "runs" / "tune" / "s"
    url = f"sqlite:///{study_dir / 'study.db'}"
    a, b = _worker(tmp_path, n), _worker(tmp_path, n)  # started at once on one study
    # kill a while it trains a trial
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and a.poll() is None:
        try:
            study = optuna.load_study(study_name="s", storage=url)
            running = [t for t in study.get_trials(states=(TrialState.RUNNING,))
                       if t.user_attrs.get("worker", "").endswith(f":{a.pid}")]
        except (KeyError, Exception):  # noqa: BLE001 - the study is not created yet
            running = []
        if running:
            os.kill(a.pid, signal.SIGKILL)
            killed = running[0].number
        time.sleep(0.2)
    assert killed is not None, "worker a never ran a trial"
    a.wait()
    a2 = _worker(tmp_path, n)  # restarted: it joins the study again
    for p in (a2, b):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="s", storage=url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n  # the study's total, over all workers
    assert next(t for t in trials if t.number == killed).state == TrialState.FAIL  # the killed worker's trial
    workers = {t.user_attrs["worker"] for t in finished}
    assert any(w.endswith(f":{b.pid}") for w in workers)
    # no trial ran twice: every finished trial has its own run directory, trained once (one log version), and
    # exactly n run directories hold results
    runs = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(runs)) == n
    assert len(list(study_dir.glob("trial_*/*/*/seed_*/metrics.json"))) == n
    for run in runs:
        assert [p.name for p in Path(run, "logs").iterdir()] == ["version_0"]
    for t in finished:  # the validation metric went to the pruner every epoch
        assert sorted(t.intermediate_values) == [0, 1, 2]
        assert t.value == pytest.approx(min(t.intermediate_values.values()))
    # the report and the best setting
    for name in ("trials.csv", "trials.md", "history.png", "importance.png", "best.yaml", "best.json"):
        assert (study_dir / name).stat().st_size > 0, name
    csv_rows = (study_dir / "trials.csv").read_text().strip().splitlines()
    assert sum(",complete," in r for r in csv_rows) == n and any(r.startswith(f"{killed},fail,") for r in csv_rows)
    best = json.loads((study_dir / "best.json").read_text())["best"]
    assert best["value"] == pytest.approx(study.best_value) and best["trial"] == study.best_trial.number
    done = subprocess.run([sys.executable, "-m", "mmfusion", "fit", "--config", str(study_dir / "best.yaml"),
                           "--out", str(tmp_path / "again"), "--no-progress"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "MMFUSION_KERNELS": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    again = json.loads(next((tmp_path / "again").rglob("metrics.json")).read_text())
    assert abs(again["best_val_loss"] - best["value"]) < 1e-6  # same seed, settings and data: the same training


def test_the_pruner_stops_a_trial_after_the_epoch_it_reads(tmp_path, capsys, monkeypatch):
    """The validation metric reaches the pruner after every epoch, and a pruned trial stops there."""
    # a pruner that prunes any val_loss below 1e9 at its first report, standing in for the median pruner
    monkeypatch.setattr(optuna.pruners, "MedianPruner", lambda **_: optuna.pruners.ThresholdPruner(lower=1e9))
    space = _space(tmp_path, "train.lr: {log_float: [1.0e-4, 3.0e-3]}\n")
    code = main(["tune", *BASE, "--space", space, "--trials", "2", "--max-epochs", "3", "--study", "p",
                 "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0 and out.count("pruned after 1 epoch") == 2, out
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'runs' / 'tune' / 'p' / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)
    for t in study.trials:  # stopped after its first epoch's validation: logged, never tested
        run = Path(t.user_attrs["run_dir"])
        assert (run / "config.yaml").exists() and not (run / "metrics.json").exists()
    assert "no trial completed" in out and not (tmp_path / "runs" / "tune" / "p" / "best.yaml").exists()


def test_a_metric_the_runs_do_not_log_stops_the_worker_by_name(tmp_path, capsys):
    space = _space(tmp_path, "train.lr: {log_float: [1.0e-4, 3.0e-3]}\n")
    code = main(["tune", *BASE, "--space", space, "--trials", "3", "--max-epochs", "1", "--metric", "val_acc",
                 "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "'--metric'" in err and "val_mae" in err and "val_acc" in err, err
    assert len(list((tmp_path / "runs" / "tune").rglob("trial_*"))) == 1  # stopped after the first trial

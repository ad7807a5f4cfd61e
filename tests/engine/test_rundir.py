"""Hostile run files, configs and concurrent commands: each is refused with one named error (exit status 2), and
nothing the run had is lost. Every hostile input is made here, from one small finished run."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmfusion import io as mmio
from mmfusion.cli.main import main
from mmfusion.engine.checkpoints import load_system
from mmfusion.errors import ConfigError
from mmfusion.io import run_lock
from mmfusion.models.lstm import LateFusionLSTMConfig
from tests.helpers import make_splits

DATA = ["--set", "data_args.n_train=48", "--set", "data_args.n_valid=16", "--set", "data_args.n_test=16"]
FIT = ["fit", "--model", "lf_lstm_tiny", "--max-epochs", "1", "--batch-size", "16", "--no-progress",
       "--threads", "1", *DATA]


def _run(out: Path) -> Path:
    return out / "lf_lstm_tiny" / "synthetic" / "seed_1111"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The output root of one finished one-epoch run (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("finished") / "runs"
    assert main([*FIT, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    out = tmp_path / "runs"
    shutil.copytree(finished, out)
    return out


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and "logs" not in p.parts and p.name != ".lock"}


# ---------------------------------------------------------------------------------------------- 38.1 records
@pytest.mark.parametrize("damage", ["garbage", "list", "empty", "missing"])
def test_resume_refuses_without_a_readable_settings_record(copy, capsys, damage):
    config = _run(copy) / "config.yaml"
    if damage == "missing":
        config.unlink()
    else:
        config.write_text({"garbage": "train: {lr: [0.1\n", "list": "- 1\n- 2\n", "empty": ""}[damage])
    (_run(copy) / "metrics.json").unlink()  # an interrupted run: --resume would train on
    before = _snapshot(_run(copy))
    assert main([*FIT, "--out", str(copy), "--resume", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: " in err and "settings record" in err and "Traceback" not in err
    assert _snapshot(_run(copy)) == before  # nothing trained, nothing rewritten


def test_the_checkpoint_keeps_its_own_settings_record(copy, capsys):
    """config.yaml edited to the new settings does not let a resume report them: the checkpoint says otherwise."""
    run = _run(copy)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.001", "lr: 0.01"))
    (run / "metrics.json").unlink()
    assert main([*FIT, "--out", str(copy), "--resume", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'last.ckpt'}: this run's checkpoint was trained with other settings" in err
    assert "'train.lr'" in err and "expected 0.001, got 0.01" in err


# ---------------------------------------------------------------------------------------------- 38.2 locks
def test_a_locked_run_refuses_fit_bench_and_robustness_naming_the_holder(copy, tmp_path, capsys):
    run = _run(copy)
    before = _snapshot(run)
    with run_lock(run):
        assert main([*FIT, "--out", str(copy), "--resume"]) == 2
        assert f"{run}: this run directory is in use by process {os.getpid()}" in capsys.readouterr().err
        assert main(["bench", "--models", "lf_lstm_tiny", "--max-epochs", "1", "--batch-size", "16", "--threads",
                     "1", "--no-progress", "--config-dir", str(tmp_path), "--out", str(copy), *DATA]) == 2
        assert f"in use by process {os.getpid()}" in capsys.readouterr().err
        assert main(["robustness", "--runs", str(copy), "--data", "synthetic", "--set", "n_train=48", "--set",
                     "n_valid=16", "--set", "n_test=16", "--no-progress"]) == 2
        assert f"in use by process {os.getpid()}" in capsys.readouterr().err
    assert _snapshot(run) == before
    # released: the same commands go through
    assert main([*FIT, "--out", str(copy), "--resume"]) == 0


def test_a_lock_left_by_a_killed_process_never_blocks(tmp_path):
    run = tmp_path / "run"
    code = ("import os, signal, sys; from mmfusion.io import run_lock\n"
            f"with run_lock({str(run)!r}):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9 and (run / ".lock").read_text().strip().isdigit()  # died holding it
    with run_lock(run):
        assert (run / ".lock").read_text().strip() == str(os.getpid())


def test_shared_locks_exclude_only_an_exclusive_holder(tmp_path):
    from mmfusion.errors import RunLockedError

    with run_lock(tmp_path, shared=True), run_lock(tmp_path, shared=True):
        with pytest.raises(RunLockedError, match="in use by another process"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):
        with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()}"):
            with run_lock(tmp_path, shared=True):
                pass


def test_a_waiting_lock_takes_its_turn_after_the_holder(tmp_path):
    """``wait=True`` (the tuning study's report, written by whichever worker ends) blocks until the holder lets go."""
    import time

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mmfusion.io import run_lock\n"
                               f"with run_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(1.5)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        with run_lock(tmp_path, wait=True):
            waited = time.perf_counter() - t0  # the holder slept 1.5 s holding it
    finally:
        holder.kill()
        holder.wait()
    assert waited > 0.5


# ---------------------------------------------------------------------------------------------- 38.7 damage
@pytest.mark.parametrize("content", ["truncated", "[1, 2]"])
def test_a_damaged_metrics_file_is_named_by_resume_and_bench(copy, tmp_path, capsys, content):
    metrics = _run(copy) / "metrics.json"
    metrics.write_text(metrics.read_text()[:25] if content == "truncated" else content)
    assert main([*FIT, "--out", str(copy), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{metrics}: damaged results file" in err and "Traceback" not in err
    assert main(["bench", "--models", "lf_lstm_tiny", "--max-epochs", "1", "--batch-size", "16", "--threads", "1",
                 "--no-progress", "--config-dir", str(tmp_path), "--out", str(copy), *DATA]) == 2
    assert f"{metrics}: damaged results file" in capsys.readouterr().err


@pytest.mark.parametrize(("dims", "says"), [({"text": 10**13}, "memory"), ({"text": -5}, "a positive int"),
                                            ({"text": "wide"}, "a positive int")])
def test_checkpoint_sizes_are_checked_before_building(finished, tmp_path, capsys, dims, says):
    ckpt = torch.load(_run(finished) / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["feature_dims"] = {**ckpt["hyper_parameters"]["feature_dims"], **dims}
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    assert main(["test", "--ckpt", str(bad), "--data", "synthetic", "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: its hyper-parameters do not describe a model this version builds" in err
    assert says in err and "feature_dims" in err and "Traceback" not in err
    assert not (tmp_path / "t.json").exists()


def test_a_model_too_large_for_memory_is_refused_before_any_directory(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main([*FIT, "--out", str(out), "--set", "model_args.hidden=100000"]) == 2
    err = capsys.readouterr().err
    assert "lf_lstm_tiny [model_args]: lf_lstm_tiny would have" in err and "GiB of memory" in err
    assert "Traceback" not in err and not out.exists()
    assert main([*FIT, "--out", str(out), "--set", "model_args.hidden=10000000000"]) == 2
    err = capsys.readouterr().err
    assert "lf_lstm_tiny would have more parameters than any machine's memory holds" in err
    assert "Traceback" not in err and not out.exists()
    cfg = tmp_path / "huge.yaml"
    cfg.write_text("model_args:\n  hidden: 10000000000\n")
    assert main([*FIT, "--out", str(out), "--config", str(cfg)]) == 2
    assert "memory holds" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------------- 38.8 advice
def test_unsafe_loading_advice_is_never_relayed(tmp_path, capsys):
    bad = tmp_path / "eval.ckpt"
    torch.save({"hyper_parameters": {"model_name": eval}, "state_dict": {}}, bad)
    assert main(["test", "--ckpt", str(bad), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: not a loadable mmfusion checkpoint" in err and "Unsupported global: GLOBAL eval" in err
    for advice in ("weights_only", "safe_globals", "allowlist", "trust"):
        assert advice not in err


# ---------------------------------------------------------------------------------------------- 38.10 magnitude
def test_divergence_names_the_data_magnitude(tmp_path, capsys):
    from mmfusion.data.mult import write_mult

    splits = make_splits({"dims": {"text": 6, "audio": 3, "vision": 4}, "lengths": {"text": 5, "audio": 7,
                                                                                  "vision": 6}}, (32, 8, 8))
    for s in splits.values():
        s.labels[:] = s.labels * 1e30
    path = tmp_path / "huge_labels.pkl"
    write_mult(path, splits)
    code = main(["fit", "--model", "lf_lstm_tiny", "--data", f"mult:{path}", "--max-epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "training diverged" in err and "largest |value| in the training split" in err
    assert re.search(r"labels [23](\.\d+)?e\+30", err), err


# ---------------------------------------------------------------------------------------------- 38.12 full disk
@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(name)``: every write of a file called ``name`` fails as on a full disk (ENOSPC)."""
    real_open = open

    def arm(name: str) -> None:
        def fake_open(file, mode="r", *args, **kwargs):
            if "w" in mode and Path(file).name.startswith(f".{name}."):  # mmfusion.io's temporary file
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(mmio, "open", fake_open, raising=False)

    return arm


@pytest.mark.parametrize("name", ["config.yaml", "last.ckpt"])
def test_a_fresh_run_failing_on_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, capsys, full_disk, name):
    out = tmp_path / "runs"
    full_disk(name)
    assert main([*FIT, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"/seed_1111/{'checkpoints/' * (name == 'last.ckpt')}{name}: No space left on device")
    assert not _run(out).exists()  # a plain rerun is not blocked by an empty seed directory
    assert not list(out.rglob(".*.tmp"))


def test_training_on_failing_on_a_full_disk_keeps_the_results(copy, capsys, full_disk):
    run = _run(copy)
    before = _snapshot(run)
    full_disk("metrics.json")
    assert main([*FIT[:4], "2", *FIT[5:], "--out", str(copy), "--resume"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{run / 'metrics.json'}: No space left on device")
    after = _snapshot(run)
    for name in ("metrics.json", "config.yaml", "predictions.csv", "summary.md", "env.json", "data_report.json"):
        assert after[name] == before[name], name
    assert not (run / "metrics_1_epochs.json").exists()


# ---------------------------------------------------------------------------------------------- 37.5 defaults
def test_an_old_checkpoint_rebuilds_its_model_after_a_default_changes(finished, monkeypatch, tmp_path, capsys):
    run = _run(finished)
    stored = (run / "config.yaml").read_text()
    for name in LateFusionLSTMConfig.__dataclass_fields__:  # every argument, defaults included
        assert f"\n  {name}: " in stored, name
    before = load_system(run / "checkpoints" / "best.ckpt")
    # the defaults change (deeper, bidirectional LSTMs); the trained model must not
    defaults = LateFusionLSTMConfig.__init__.__defaults__
    monkeypatch.setattr(LateFusionLSTMConfig.__init__, "__defaults__", (64, 2, True, *defaults[3:]))
    assert LateFusionLSTMConfig().num_layers == 2  # the simulated change took effect
    after = load_system(run / "checkpoints" / "best.ckpt")
    assert after.model.config == before.model.config and after.model.config.num_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(after.state_dict().values(), before.state_dict().values(),
                                                 strict=True))
    out = tmp_path / "t.json"
    assert main(["test", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "--data", "synthetic", "--out", str(out),
                 "--set", "n_train=48", "--set", "n_valid=16", "--set", "n_test=16"]) == 0
    assert json.loads(out.read_text())["corr"] == json.loads((run / "metrics.json").read_text())["corr"]


def test_how_a_file_is_read_is_not_a_setting_that_blocks_a_resume(tmp_path):
    """``data_args.lazy`` changes how an HDF5 file is read, not what is read: a run made in memory resumes lazily;
    any other reader option that differs is still refused."""
    from mmfusion.config import yaml_dump
    from mmfusion.engine.rundir import check_same_settings

    made = {"model": "lf_lstm", "data": "h5:x.h5", "data_args": {"lazy": False, "max_len": 50},
            "train": {"max_epochs": 3}}
    (tmp_path / "config.yaml").write_text(yaml_dump(made))
    assert check_same_settings(tmp_path, {**made, "data_args": {"lazy": True, "max_len": 50}}) is None
    with pytest.raises(ConfigError, match=r"key .data_args.*\{.max_len.: 40\}"):
        check_same_settings(tmp_path, {**made, "data_args": {"lazy": True, "max_len": 40}})

"""Run directories: where a run's files go, the environment record, and whether a run directory may be reused
or trained on (the settings it was made with must be the ones given now).

Each seed's directory ``<out>/<model>[-<ablation>]/<dataset>/seed_<seed>/`` holds ``config.yaml`` (fully
resolved, every model argument included), ``metrics.json``, ``predictions.csv`` (id, prediction, label),
``summary.md``, ``env.json`` (package versions, git commit), ``data_report.json``, ``checkpoints/{best,last}.ckpt``
(each also holding the settings record and the random generators' states), CSV (or TensorBoard) logs and ``.lock``
(see :func:`mmfusion.io.run_lock`). The model directory gets ``summary.{md,csv,json}`` with mean ± std over the
seeds. All files are written atomically. What is guaranteed, and the tests behind it: ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfusion.config import (
    yaml_dump,
    yaml_load,
)
from mmfusion.data import HOW_READ, DatasetBundle
from mmfusion.engine.config import RunConfig
from mmfusion.errors import ConfigError, DataError


def env_info() -> dict[str, Any]:
    """Package versions, machine and git commit, stored with every run."""
    import lightning
    import sklearn

    import mmfusion

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "unknown", False
    return {
        "mmfusion": mmfusion.__version__, "git_commit": commit, "git_dirty": dirty,
        "python": sys.version.split()[0], "torch": torch.__version__, "lightning": lightning.__version__,
        "numpy": np.__version__, "scikit_learn": sklearn.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_dir_for(cfg: RunConfig, bundle: DatasetBundle, seed: int) -> Path:
    name = cfg.model + (f"-{cfg.ablation}" if cfg.ablation else "")
    return Path(cfg.out) / name / bundle.name / f"seed_{seed}"


# settings that do not change what a run computes: how it is shown, logged or threaded
PRESENTATION_ONLY = {"out", "dataset", "train.progress", "train.logger", "train.threads", "train.num_workers",
                     "train.strategy"}


def flat_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved run config with the ``train`` section's keys spelt ``train.<key>`` and the ``model_args``
    section's ``model_args.<key>`` (a record made before runs stored every model argument lacks some of them)."""
    out = {k: v for k, v in config.items() if k not in ("train", "model_args")}
    if isinstance(out.get("data_args"), Mapping):  # how a file is read (lazily or not) is not what is read
        out["data_args"] = {k: v for k, v in out["data_args"].items() if k not in HOW_READ}
    out.update({f"train.{k}": v for k, v in (config.get("train") or {}).items()})
    args = config.get("model_args")
    if isinstance(args, Mapping):
        out.update({f"model_args.{k}": v for k, v in args.items()})
    else:
        out["model_args"] = args
    return out


def _differing(before: Mapping[str, Any], resolved: Mapping[str, Any]) -> tuple[list[str], dict[str, Any],
                                                                                 dict[str, Any]]:
    """The settings of ``resolved`` that differ from the record ``before`` (both flattened, as stored)."""
    then = flat_settings(before)
    now = flat_settings(yaml_load(yaml_dump(dict(resolved))))  # as it would be stored
    # a setting the record lacks (or has no more) came with another version of mmfusion: not compared
    differ = [k for k in sorted(set(then) & set(now)) if k not in PRESENTATION_ONLY and then[k] != now[k]]
    return differ, then, now


def check_same_settings(run: Path, resolved: Mapping[str, Any]) -> int | None:
    """Refuse to reuse or continue ``run`` with other settings than it was made with: its results (or the epochs
    trained so far) would be reported under settings they did not come from. The one change allowed is a larger
    epoch budget (training on): then the run's ``max_epochs`` is returned, else None.

    The settings are compared with the run's ``config.yaml`` and with the record each checkpoint keeps of them
    (``last.ckpt``'s ``hyper_parameters.meta.run_config``). A ``config.yaml`` that cannot be read, or is missing from
    a run that has checkpoints or results, is a :class:`DataError` naming it: without a record there is nothing to
    compare with. A run directory holding neither (interrupted before it wrote anything) starts afresh.
    """
    from mmfusion.engine.resume import checkpoint_record, settings_record

    config, last = run / "config.yaml", run / "checkpoints" / "last.ckpt"
    stored = settings_record(config)
    if stored is None:
        if last.exists() or (run / "metrics.json").exists():
            raise DataError("the run's settings record is missing; a run cannot be resumed or reused without it: "
                            "choose another --out", file=config)
        return None
    differ, before, now = _differing(stored, resolved)
    extend_from = None
    if differ == ["train.max_epochs"] and now["train.max_epochs"] > before["train.max_epochs"]:
        extend_from = int(before["train.max_epochs"])
    elif differ:
        k = differ[0]
        raise ConfigError(f"this run was made with other settings ({', '.join(differ)}); --resume would report its "
                          "results under these. Give the run's settings, or another --out for a new run",
                          source=str(config), key=k, expected=before[k], actual=now[k])
    in_ckpt = checkpoint_record(last) if last.exists() else None
    if in_ckpt is not None:  # the checkpoint's own record: epochs trained under it, whatever config.yaml says now
        differ, then, now = _differing(in_ckpt, resolved)
        differ = [k for k in differ if k != "train.max_epochs"]  # a budget being trained on to: config.yaml's say
        if differ:
            k = differ[0]
            raise ConfigError(f"this run's checkpoint was trained with other settings ({', '.join(differ)}); "
                              "--resume would report its results under these. Give the run's settings, or another "
                              "--out for a new run", source=str(last), key=k, expected=then[k], actual=now[k])
    return extend_from


@dataclass
class Reuse:
    """What ``--resume`` makes of an existing run directory (all None: train, from its last checkpoint if any)."""

    done: dict[str, Any] | None = None  # a finished run's results, reused as they are
    previous: dict[str, Any] | None = None  # a finished run's results, while it is trained on to a larger budget
    extend_from: int | None = None  # the epoch budget it is trained on from


def reuse_or_extend(run: Path, resolved: Mapping[str, Any], max_epochs: int, *, resume: bool,
                    check_settings: bool = True, console: Any = None) -> Reuse:
    """With ``resume``: reuse a finished run, or train it on to a larger ``max_epochs`` (refused where it diverged
    or stopped early: more epochs would not train it further), after :func:`check_same_settings`
    (``check_settings``: the first process of a run checks; the others follow it)."""
    from mmfusion.engine.resume import read_metrics

    metrics_file = run / "metrics.json"
    extend_from = check_same_settings(run, resolved) if resume and check_settings else None
    if extend_from is not None and metrics_file.exists():
        previous = read_metrics(metrics_file)
        if previous.get("diverged") or int(previous.get("epochs_run", extend_from)) < extend_from:
            why = ("diverged" if previous.get("diverged")
                   else f"stopped early after {previous.get('epochs_run')} epochs")
            raise ConfigError(f"this run {why}; more epochs would not train it further. Choose another --out for a "
                              "new run", source=str(metrics_file), key="train.max_epochs",
                              expected=extend_from, actual=max_epochs)
        if console:
            console.print(f"{run}: training on from {extend_from} to {max_epochs} epochs (the "
                          f"{extend_from}-epoch results will be kept in metrics_{extend_from}_epochs.json)",
                          style="yellow", markup=False)
        return Reuse(previous=previous, extend_from=extend_from)
    if resume and metrics_file.exists():
        done = read_metrics(metrics_file)
        if console:
            console.print(f"{run}: finished earlier, reusing its results", style="dim", markup=False)
        return Reuse(done=done)
    return Reuse(extend_from=extend_from)

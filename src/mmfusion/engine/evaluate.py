"""Evaluating a trained model: the predict loop over a split, and ``test``/``predict`` of a checkpoint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfusion.data import DatasetBundle
from mmfusion.engine.report import mean_std, write_predictions
from mmfusion.errors import MMFusionError
from mmfusion.io import atomic_write_json


@contextmanager
def ctrl_c_is_an_interrupt(trainer: Any) -> Iterator[None]:
    """Lightning answers Ctrl-C by tearing the run down and calling ``sys.exit(1)``, which would end the command
    silently with status 1; turn that back into the ``KeyboardInterrupt`` the command line reports."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


def predict_arrays(trainer: Any, system: Any, loader: Any) -> tuple[list[str], np.ndarray, np.ndarray, float]:
    """Run the trainer's predict loop; returns ids, predictions, labels and seconds taken."""
    t0 = time.perf_counter()
    with ctrl_c_is_an_interrupt(trainer):
        outs = trainer.predict(system, dataloaders=loader)
    seconds = time.perf_counter() - t0
    ids = [i for o in outs for i in o["ids"]]
    pred = torch.cat([o["pred"] for o in outs]).numpy()
    labels = torch.cat([o["labels"] for o in outs]).numpy()
    return ids, pred, labels, seconds


def predictions_beside(metrics: Path) -> Path:
    """Where ``test`` writes its per-sample predictions beside the metrics JSON ``metrics``:
    ``X.metrics.json`` and ``X.json`` -> ``X.predictions.csv``."""
    name = metrics.name.removesuffix(".json").removesuffix(".metrics")
    return metrics.with_name(name + ".predictions.csv")


def checkpoint_data(system: Any, ckpt: str | Path, data: str, data_args: Mapping[str, Any],
                    say: Callable[[str], Any]) -> tuple[DatasetBundle, dict[str, Any]]:
    """Load ``data`` with the reader options the checkpoint was trained with (``data_args`` override them)."""
    from mmfusion.data import load_data
    from mmfusion.engine.checkpoints import check_compatible, reader_options

    options, inherited = reader_options(system.hparams, ckpt, data, dict(data_args))
    if inherited:
        say("reader options from the checkpoint's training run: "
            + ", ".join(f"{k}={v}" for k, v in inherited.items()) + " (override with --set KEY=VALUE)")
    bundle = load_data(data, options, source="--set")
    check_compatible(system, bundle, ckpt)
    return bundle, options


@dataclass
class Evaluation:
    """What :func:`evaluate_checkpoint` did: the model's name, the data, and the files it wrote."""

    model_name: str
    bundle: DatasetBundle
    split: str
    samples: int
    out: Path  # the metrics JSON (test) or the predictions CSV (predict)
    predictions: Path | None = None  # test: the per-clip predictions beside the metrics
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def evaluate_checkpoint(ckpt: str | Path, data: str, split: str, data_args: Mapping[str, Any], *,
                        predictions_only: bool = False, out: str | Path | None = None, batch_size: int = 64,
                        compile: bool = False, say: Callable[[str], Any] = print) -> Evaluation:
    """``test`` (metrics JSON and per-clip predictions) or ``predict`` (predictions CSV) of one checkpoint on
    ``split`` of ``data``; by default the files go into the checkpoint's run directory."""
    import lightning as L

    from mmfusion.engine.checkpoints import load_system, run_dir
    from mmfusion.engine.loaders import make_loader

    system = load_system(ckpt)
    bundle, options = checkpoint_data(system, ckpt, data, data_args, say)
    if compile:
        from mmfusion.runtime import compile_model

        system.model = compile_model(system.model)
    loader = make_loader(bundle, split, batch_size, False, labeled=not predictions_only)
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=True,
                        enable_model_summary=False)
    ids, pred, labels, _ = predict_arrays(trainer, system, loader)
    stem = f"{split}_{bundle.name}"
    done = Evaluation(system.hparams["model_name"], bundle, split, len(ids), Path(out) if out else Path())
    if predictions_only:
        done.out = done.out if out else run_dir(ckpt) / f"{stem}.predictions.csv"
        write_predictions(done.out, ids, pred, labels if bundle.splits[split].labeled else None, bundle.task,
                          bundle.emotions)
        return done
    done.out = done.out if out else run_dir(ckpt) / f"{stem}.metrics.json"
    _write_test(done, ckpt, options, ids, pred, labels)
    return done


def _write_test(done: Evaluation, ckpt: str | Path, options: Mapping[str, Any], ids: Sequence[str],
                pred: np.ndarray, labels: np.ndarray) -> None:
    """Score ``pred`` and write the metrics JSON ``done.out`` and the predictions beside it."""
    from mmfusion.engine.system import compute_metrics
    from mmfusion.metrics import metric_warnings

    bundle = done.bundle
    done.metrics = compute_metrics(pred, labels, bundle.task, bundle.emotions)
    done.notes = metric_warnings(pred, labels, bundle.task)
    done.predictions = predictions_beside(done.out)
    atomic_write_json(done.out, {"checkpoint": str(ckpt), "data": bundle.source, "data_args": dict(options),
                                 "split": done.split, "predictions": done.predictions.name, **done.metrics,
                                 "warnings": done.notes})
    write_predictions(done.predictions, ids, pred, labels, bundle.task, bundle.emotions)


def fold_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The ``fold_K*.ckpt`` files of ``folder`` with their (1-based) fold, in fold order."""
    files = sorted((int(m.group(1)), f) for f in folder.glob("*.ckpt") if (m := re.search(r"fold_?(\d+)", f.name)))
    if not files:
        raise MMFusionError(f"--ckpt {folder}: no fold_K*.ckpt checkpoints in this folder")
    return files


def fold_summary(folder: Path, per_fold: Mapping[int, Mapping[str, Any]]) -> tuple[dict[str, Any], Path]:
    """Mean ± std (sample std) over the folds of every numeric metric, written to ``folder/test_folds.json``."""
    keys = [k for k, v in next(iter(per_fold.values())).items() if isinstance(v, (int, float))
            and not isinstance(v, bool)]
    summary = {m: mean_std([r[m] for r in per_fold.values()]) for m in keys}
    out = folder / "test_folds.json"
    atomic_write_json(out, {"folds": {str(k): r for k, r in per_fold.items()}, "metrics": summary})
    return summary, out

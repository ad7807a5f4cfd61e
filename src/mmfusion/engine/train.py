"""Training: ``fit`` trains one model on one dataset for every seed (and every cross-validation fold), writes each
seed's run directory (:mod:`mmfusion.engine.rundir`) and the mean ± std summary (:mod:`mmfusion.engine.report`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfusion.config import (
    yaml_dump,
    yaml_load,
)
from mmfusion.data import DatasetBundle, load_data
from mmfusion.engine.config import RunConfig, TrainConfig, check_devices_available
from mmfusion.engine.evaluate import ctrl_c_is_an_interrupt, predict_arrays
from mmfusion.engine.loaders import check_model_reads, make_loader, require_training_splits, training_loaders
from mmfusion.engine.report import (
    DIAGNOSTIC_PREFIXES,
    metric_keys,
    notes_markdown,
    predictions_csv,
    results_csv,
    results_markdown,
    rows_markdown,
    run_markdown,
    run_notes,
    summarize,
)
from mmfusion.engine.rundir import env_info, reuse_or_extend, run_dir_for
from mmfusion.errors import ConfigError, DataError
from mmfusion.io import atomic_write_json, atomic_write_many, atomic_write_text, json_text, run_lock
from mmfusion.metrics import metric_warnings
from mmfusion.models import load_pretrained
from mmfusion.runtime import launched_worker


def data_magnitude(bundle: DatasetBundle) -> str:
    """The largest absolute feature value of each modality and the largest absolute label of the training split,
    for the message of a run that diverged (data scaled by 10^30 diverges at any learning rate)."""
    split = bundle.splits.get("train")
    if split is None:
        return "unknown"
    parts = []
    for m, x in split.features.items():
        if np.size(x):
            parts.append(f"{m} {max(abs(float(np.max(x))), abs(float(np.min(x)))):.3g}")
    if split.labels is not None and np.size(split.labels):
        y = np.asarray(split.labels, dtype=np.float64)
        parts.append(f"labels {float(np.max(np.abs(y))):.3g}")
    return ", ".join(parts) or "unknown"


def fit_one(cfg: RunConfig, bundle: DatasetBundle, seed: int, *, resume: bool = False,
            console: Any = None, callbacks: Sequence[Any] = (),
            stops: tuple[type[BaseException], ...] = ()) -> dict[str, Any]:
    """Train and test one seed. With ``resume``, a finished run is read back and an interrupted one continues from
    ``checkpoints/last.ckpt`` (epoch, optimiser, scheduler, early-stopping and random-generator state restored, so
    that it ends as the uninterrupted run would have).

    The run directory is locked (:func:`mmfusion.io.run_lock`) while the run trains: a second process is refused,
    naming the first one's PID. The model's sizes are checked before the directory is made; a fresh run that fails
    before its first checkpoint leaves no directory behind, and a failed run never changes the results it had.
    ``callbacks``: more Lightning callbacks for the training (a tuning trial's pruning, say); ``stops``: the
    exceptions those callbacks raise to end a run on purpose (a pruned trial), which keep the run's directory."""
    from mmfusion.engine.model_plan import plan_model

    run = run_dir_for(cfg, bundle, seed)
    worker = launched_worker()  # a further device's process: it trains in lockstep, the first one writes
    if run.exists() and not resume and not worker:
        raise ConfigError("run directory already exists; pass --resume to continue or reuse it, or choose --out",
                          source=str(run), key="out", expected="a new directory", actual=str(run))
    full_args, _ = plan_model(cfg.model, cfg.model_args, bundle.feature_dims, bundle.output_dim,
                              source=f"{cfg.model} [model_args]")
    if worker:
        return _fit_one_locked(cfg, bundle, seed, full_args, resume=resume, console=console, callbacks=callbacks)
    fresh = not run.exists()
    with run_lock(run):
        try:
            return _fit_one_locked(cfg, bundle, seed, full_args, resume=resume, console=console, callbacks=callbacks)
        except BaseException as exc:
            # a fresh run that failed before its first checkpoint: nothing to resume, so nothing left behind
            # (an interrupted one keeps its checkpoints for --resume)
            if (fresh and not isinstance(exc, (KeyboardInterrupt, *stops))
                    and not (run / "checkpoints" / "last.ckpt").exists()):
                shutil.rmtree(run, ignore_errors=True)
            raise


def _fit_one_locked(cfg: RunConfig, bundle: DatasetBundle, seed: int, full_args: dict[str, Any], *,
                    resume: bool, console: Any, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """:func:`fit_one` inside the run's lock: prepare -> build the trainer -> train -> score -> write."""
    run = run_dir_for(cfg, bundle, seed)
    worker = launched_worker()
    resolved = cfg.as_dict() | {"model_args": full_args, "seeds": [seed], "dataset": bundle.describe()}
    plan = reuse_or_extend(run, resolved, cfg.train.max_epochs, resume=resume, check_settings=not worker,
                           console=console)
    if plan.done is not None:
        return plan.done
    ckpt_path, resumed_from = _resume_point(run, resume, console)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if not worker and plan.previous is None:  # (training on: the records change only once the longer run finished)
        atomic_write_many({path: text.encode("utf-8") for path, text in _records(run, resolved, bundle).items()})
    system = _build_system(cfg, bundle, seed, full_args, resolved, run, fresh=not ckpt_path, console=console)
    trainer, ckpt_cb, timer = _build_trainer(run, cfg.train, bundle.task, callbacks)
    train_loader, val_loader = training_loaders(bundle, cfg.train, seed)
    t0 = time.perf_counter()
    with ctrl_c_is_an_interrupt(trainer), _naming_failed_writes(run):
        trainer.fit(system, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - t0
    if worker:  # the first process scores the test split and writes the results
        return {"seed": seed, "model": cfg.model, "ablation": cfg.ablation}
    epochs_run = int(trainer.current_epoch)
    if cfg.train.strategy == "ddp_spawn" and (run / "checkpoints" / "last.ckpt").exists():
        # trained in spawned processes: Lightning hands back the best checkpoint's path and the weights, not the
        # callbacks' state; the last checkpoint has it
        epochs_run, ckpt_cb.best_model_score = _spawned_state(run / "checkpoints" / "last.ckpt",
                                                               ckpt_cb.best_model_score)
    _check_diverged(system.diverged, ckpt_cb.best_model_score, run, bundle, cfg.train.lr, console)
    scored = _score(trainer, system, ckpt_cb, run, bundle, cfg.train, console)
    result = {
        **scored["metrics"],
        "best_epoch": scored["best_epoch"], "best_val_loss": float(ckpt_cb.best_model_score or float("nan")),
        "epochs_run": epochs_run, "params": int(sum(p.numel() for p in system.model.parameters())),
        "train_seconds_per_epoch": float(np.mean(timer.seconds)) if timer.seconds else float("nan"),
        "fit_seconds": fit_seconds, "test_ms_per_sample": 1000.0 * scored["seconds"] / max(len(scored["ids"]), 1),
        "seed": seed, "model": cfg.model, "ablation": cfg.ablation, "data": bundle.source,
        "resumed_from_epoch": resumed_from, "diverged": system.diverged, "warnings": scored["notes"],
        "data_caveats": list(bundle.report.caveats),  # e.g. "non-standard split": travels with every number
        "learning_curve": list(system.curve),  # per epoch of this process: train/validation losses, diagnostics
    }
    _write_run(run, cfg, bundle, result, scored, plan, resolved)
    return result


def _records(run: Path, resolved: Mapping[str, Any], bundle: DatasetBundle) -> dict[Path, str]:
    """The settings, environment and data records of a run directory."""
    return {run / "config.yaml": yaml_dump(dict(resolved)), run / "env.json": json_text(env_info()),
            run / "data_report.json": json_text(bundle.report.as_dict())}


def _resume_point(run: Path, resume: bool, console: Any) -> tuple[str | None, int | None]:
    """The checkpoint a resumed run continues from and the epoch it had finished (None, None: from the start)."""
    last = run / "checkpoints" / "last.ckpt"
    if not (resume and last.exists()):
        return None, None
    try:
        resumed_from = int(torch.load(str(last), map_location="cpu", weights_only=True)["epoch"])
    except Exception as exc:  # noqa: BLE001 - a damaged file: say which, and how to start over
        raise DataError(f"cannot resume from this checkpoint ({type(exc).__name__}); delete it to train the "
                        "run from the start", file=last) from None
    if console:
        console.print(f"{run}: resuming from {last} (epoch {resumed_from} finished)", style="yellow", markup=False)
    return str(last), resumed_from


def _build_system(cfg: RunConfig, bundle: DatasetBundle, seed: int, full_args: dict[str, Any],
                  resolved: Mapping[str, Any], run: Path, *, fresh: bool, console: Any) -> Any:
    """The seeded LightningModule of a run, with its pretrained weights (on a fresh start)."""
    import lightning as L

    from mmfusion.engine.system import FusionSystem

    if cfg.train.strategy == "ddp_spawn":  # the processes receive the model through shared memory: named files
        # in /dev/shm rather than passed file descriptors, which some sandboxes and containers refuse
        torch.multiprocessing.set_sharing_strategy("file_system")
    L.seed_everything(seed, workers=True, verbose=False)
    system = FusionSystem(cfg.model, full_args, bundle.feature_dims, bundle.output_dim, bundle.task,
                          bundle.emotions, cfg.train, meta={"seed": seed, "data": bundle.source,
                                                                    "ablation": cfg.ablation, "data_spec": cfg.data,
                                                                    "data_args": dict(cfg.data_args),
                                                                    "feature_set": bundle.feature_set,
                                                                    "run_config": yaml_load(yaml_dump(
                                                                        dict(resolved)))})
    if cfg.pretrained and fresh:
        _load_pretrained(cfg, system, run, full_args, console)
    return system


def _load_pretrained(cfg: RunConfig, system: Any, run: Path, full_args: Mapping[str, Any], console: Any) -> None:
    """Load ``cfg.pretrained``'s files into the model's branches; record what was loaded in pretrained.json.

    A whole-model checkpoint (``model``: ``--resume CKPT`` or ``--pretrained model=CKPT``) gives only its weights:
    the optimiser, the schedule and the epoch count start afresh; its network must be the run's."""
    from mmfusion.engine.checkpoints import check_whole_model

    fold = cfg.data_args.get("fold")
    files = {b: p.replace("{fold}", str(fold + 1)) if isinstance(fold, int) else p
             for b, p in cfg.pretrained.items()}  # {fold}: the authors' 1-based fold_K files
    differ = check_whole_model(files["model"], cfg.model, full_args) if "model" in files else []
    loaded = load_pretrained(system.model, files, partial=cfg.pretrained_partial)
    atomic_write_json(run / "pretrained.json", {"files": files, "branches": loaded, "model_args_changed": differ})
    if console and differ:
        console.print(f"model arguments that differ from {files['model']}'s (the run's apply): {'; '.join(differ)}",
                      style="yellow", markup=False)
    if console:
        for branch, info in loaded.items():
            console.print(f"pretrained {branch}: {info['loaded']} tensors from {files[branch]} "
                          f"({info['read_as']}); kept at their initial values: {len(info['kept'])}"
                          + (f" {info['kept'][:6]}" if info["kept"] else ""), markup=False)


def _build_trainer(run: Path, tc: TrainConfig, task: str, callbacks: Sequence[Any]) -> tuple[Any, Any, Any]:
    """The Lightning trainer of a run, its best-checkpoint callback and its epoch timer."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from mmfusion.engine.callbacks import EpochTimer
    from mmfusion.engine.resume import AtomicCheckpointIO, RandomStates
    from mmfusion.metrics import main_metric

    select_key, select_mode = main_metric(task) if tc.reference_selection else ("loss", "min")
    ckpt_cb = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor=f"val_{select_key}",
                              mode=select_mode,
                              save_top_k=1, enable_version_counter=False)
    # Lightning's save_last only writes when a best checkpoint is written; resuming needs every epoch's state.
    last_cb = ModelCheckpoint(dirpath=run / "checkpoints", filename="last", monitor=None, save_top_k=1,
                              every_n_epochs=1, enable_version_counter=False)
    timer = EpochTimer()
    every: list[Any] = [ckpt_cb, last_cb, timer, RandomStates(), *callbacks]
    if tc.patience > 0:
        every.append(EarlyStopping(monitor="val_loss", mode="min", patience=tc.patience))
    if tc.progress:
        every.append(TQDMProgressBar(refresh_rate=10))
    # one log version per (re)start, so resuming never overwrites the logs of the interrupted part
    logger: Any = TensorBoardLogger(run, name="logs") if tc.logger == "tensorboard" else CSVLogger(run, name="logs")
    # (hand-stepped per-branch optimisers clip their own gradients: Lightning refuses to clip for them)
    # Lightning detects torchrun's and SLURM's environment variables itself; the loaders split the batches across
    # the processes (training_loaders), so Lightning's own distributed sampler is not used
    trainer = L.Trainer(
        max_epochs=tc.max_epochs, accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes,
        strategy=tc.strategy, precision=tc.precision, use_distributed_sampler=False,
        gradient_clip_val=None if tc.branch_optimizers else tc.grad_clip or None,
        deterministic=tc.deterministic, callbacks=every, logger=logger,
        default_root_dir=run, enable_progress_bar=tc.progress, enable_model_summary=False,
        log_every_n_steps=10, num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()],
    )
    return trainer, ckpt_cb, timer


def _check_diverged(diverged: dict[str, Any] | None, score: Any, run: Path, bundle: DatasetBundle, lr: float,
                    console: Any) -> None:
    """Refuse a run that diverged before any epoch with a finite validation loss; say so of one that diverged
    later (its best checkpoint before the divergence is tested)."""
    if (diverged is not None and score is None) or (score is not None and not bool(torch.isfinite(score))):
        where = (f"the training loss became {diverged['loss']} at epoch {diverged['epoch']}, step "
                 f"{diverged['step']}" if diverged else "the validation loss was not finite")
        raise ConfigError(f"training diverged: {where}, before any epoch with a finite validation loss; nothing to "
                          "test. Lower the learning rate or clip gradients (train.grad_clip), or rescale the data "
                          f"if its values are extreme (largest |value| in the training split: "
                          f"{data_magnitude(bundle)})", source=str(run), key="train.lr", expected="a smaller value",
                          actual=lr)
    if diverged is not None and console:
        console.print(f"{run}: training diverged (loss {diverged['loss']} at epoch {diverged['epoch']}, step "
                      f"{diverged['step']}; largest |value| in the training split: {data_magnitude(bundle)}); "
                      "stopped there and tested the best checkpoint before it", style="bold yellow", markup=False)


def _score(trainer: Any, system: Any, ckpt_cb: Any, run: Path, bundle: DatasetBundle, tc: TrainConfig,
           console: Any) -> dict[str, Any]:
    """Test the best checkpoint on the test split: its epoch, the predictions, the metrics and their warnings."""
    import lightning as L
    from lightning.fabric.plugins.environments import LightningEnvironment

    from mmfusion.engine.system import compute_metrics

    best = ckpt_cb.best_model_path or str(run / "checkpoints" / "last.ckpt")
    state = torch.load(best, map_location="cpu", weights_only=True)
    system.load_state_dict(state["state_dict"])
    test_loader = make_loader(bundle, "test", tc.batch_size, False, tc.num_workers)
    # a multi-process predict loop would give each process only its share of the test split; the first process
    # scores it whole, on its own (a plain environment: not the torchrun/SLURM one that counts every process)
    scorer = trainer if tc.devices * tc.num_nodes == 1 and trainer.world_size == 1 else L.Trainer(
        accelerator=tc.accelerator, devices=1, precision=tc.precision, logger=False, enable_progress_bar=False,
        enable_model_summary=False, plugins=[LightningEnvironment()])
    ids, pred, labels, pred_seconds = predict_arrays(scorer, system, test_loader)
    metrics = compute_metrics(pred, labels, bundle.task, bundle.emotions)
    notes = metric_warnings(pred, labels, bundle.task)
    for warning in notes if console else []:
        console.print(f"{run}: warning: {warning}", style="bold yellow", markup=False)
    if "terms" in bundle.splits["test"].extras and bundle.task == "regression":
        from mmfusion.data.synthetic import term_capture

        metrics = {**metrics, **term_capture(pred, bundle.splits["test"].extras["terms"])}
    from mmfusion.engine.diagnostics import modality_separability

    metrics = {**metrics, **modality_separability(system.model, bundle)}  # MEA: are the agnostic codes agnostic?
    return {"best_epoch": int(state["epoch"]), "ids": ids, "pred": pred, "labels": labels, "seconds": pred_seconds,
            "metrics": metrics, "notes": notes}


def _write_run(run: Path, cfg: RunConfig, bundle: DatasetBundle, result: Mapping[str, Any],
               scored: Mapping[str, Any], plan: Any, resolved: Mapping[str, Any]) -> None:
    """Write a finished run's predictions, summary and metrics (and, training on, the shorter run's results)."""
    files = {run / "predictions.csv": predictions_csv(scored["ids"], scored["pred"], scored["labels"], bundle.task,
                                                      bundle.emotions),
             run / "summary.md": run_markdown(cfg, bundle, result)}
    if plan.previous is not None:  # the shorter run's results stay, under a name that says what they are
        files |= {run / f"metrics_{plan.extend_from}_epochs.json": json_text(plan.previous),
                  **_records(run, resolved, bundle)}
    files[run / "metrics.json"] = json_text(result)  # renamed last: a run is finished once its metrics.json is there
    # all written in full before any replaces its old version: a failure (a full disk) leaves the results as they were
    atomic_write_many({path: text.encode("utf-8") for path, text in files.items()})


@contextmanager
def _naming_failed_writes(run: Path) -> Iterator[None]:
    """A write that fails inside the training loop (a full disk under the logger) without naming its file names
    the run directory it was writing into."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(run)) from exc
        raise


def _spawned_state(last: Path, score: Any) -> tuple[int, Any]:
    """Epochs trained and the best validation loss, from the last checkpoint of a ``ddp_spawn`` run."""
    state = torch.load(last, map_location="cpu", weights_only=True)
    for key, value in state.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and "'monitor': 'val_loss'" in key and score is None:
            score = value.get("best_model_score")
    return int(state["epoch"]) + 1, score


def cross_validation_folds(cfg: RunConfig) -> list[int] | None:
    """The folds ``fit`` runs in turn when ``data_args.fold`` is ``all`` (RAVDESS's actor-wise CV), else None."""
    if cfg.data_args.get("fold") != "all":
        return None
    if not cfg.data.startswith("ravdess:"):
        raise ConfigError("fold=all needs a dataset with cross-validation folds", source="data_args", key="fold",
                          expected="ravdess:DIR data", actual=cfg.data)
    from mmfusion.data.clips import RAVDESS_FOLDS

    return list(range(RAVDESS_FOLDS))


def fit(cfg: RunConfig, *, resume: bool = False, console: Any = None) -> dict[str, Any]:
    """Train ``cfg.model`` for every seed in ``cfg.seeds``; write per-seed and summary files; return the summary.

    With ``data_args.fold: all`` every cross-validation fold is trained in turn (each as its own dataset directory,
    ``<dataset>_fold<k>``), and ``<dataset>_cv/summary.{md,csv,json}`` gives each fold's seed mean and the mean ± std
    over folds, as cross-validated results are reported."""
    check_devices_available(cfg.train)
    folds = cross_validation_folds(cfg)
    if folds is None:
        return _fit_dataset(cfg, resume=resume, console=console)
    per_fold = []
    for k in folds:
        if console:
            console.print(f"fold {k + 1} of {len(folds)}", style="bold", markup=False)
        per_fold.append(_fit_dataset(replace(cfg, data_args={**cfg.data_args, "fold": k}), resume=resume,
                                     console=console))
    keys = list(per_fold[0]["metrics"])
    metrics = summarize([{k: s["metrics"][k]["mean"] for k in keys if k in s["metrics"]} for s in per_fold], keys)
    base = Path(per_fold[0]["summary_dir"]).parent / (Path(per_fold[0]["summary_dir"]).name.rsplit("_fold", 1)[0]
                                                      + "_cv")
    summary = {"model": cfg.model, "ablation": cfg.ablation,
               "data": f"{cfg.data}, {len(folds)}-fold cross-validation, mean ± std over folds",
               "task": per_fold[0]["task"], "seeds": list(cfg.seeds), "folds": folds, "metrics": metrics,
               "per_fold": [s["metrics"] for s in per_fold], "bayes": None,
               "runs": [r for s in per_fold for r in s["runs"]], "summary_dir": str(base),
               "notes": [f"fold {k}: {n}" for k, s in zip(folds, per_fold, strict=True) for n in s["notes"]]}
    name = cfg.model + (f" ({cfg.ablation})" if cfg.ablation else "")
    rows = [(f"{name}, fold {k}", s["metrics"]) for k, s in zip(folds, per_fold, strict=True)]
    rows.append((f"**{name}, mean over folds**", metrics))
    shown = [k for k in keys if not k.startswith(("params", "train_", "test_"))]
    if launched_worker():
        return summary
    atomic_write_json(base / "summary.json", summary)
    atomic_write_text(base / "summary.md", f"# {name}: {summary['data']}\n\nFold rows: mean ± std over seeds "
                      f"{', '.join(map(str, cfg.seeds))}.\n\n" + rows_markdown(rows, shown)
                      + notes_markdown(summary["notes"]))
    atomic_write_text(base / "summary.csv", results_csv(rows, keys))
    return summary


def _fit_dataset(cfg: RunConfig, *, resume: bool = False, console: Any = None) -> dict[str, Any]:
    bundle = load_data(cfg.data, cfg.data_args, source="data_args")
    require_training_splits(bundle)
    check_model_reads(cfg.model, bundle)
    for line in bundle.report.lines():
        if console:
            console.print(f"data: {line}", style="dim", markup=False)
    results = [fit_one(cfg, bundle, seed, resume=resume, console=console) for seed in cfg.seeds]
    keys = metric_keys(bundle) + [k for k in results[0] if k.startswith(DIAGNOSTIC_PREFIXES)] + [
        "params", "train_seconds_per_epoch", "test_ms_per_sample"]
    base = run_dir_for(cfg, bundle, cfg.seeds[0]).parent
    summary = {"model": cfg.model, "ablation": cfg.ablation, "data": bundle.describe(), "task": bundle.task,
               "seeds": list(cfg.seeds), "metrics": summarize(results, keys), "bayes": bundle.bayes,
               "runs": [str(run_dir_for(cfg, bundle, s)) for s in cfg.seeds], "summary_dir": str(base),
               "notes": run_notes(cfg.model + (f":{cfg.ablation}" if cfg.ablation else ""), results),
               "data_caveats": list(bundle.report.caveats)}
    if launched_worker():
        return summary
    atomic_write_json(base / "summary.json", summary)
    rows = [(cfg.model + (f" ({cfg.ablation})" if cfg.ablation else ""), summary["metrics"])]
    atomic_write_text(base / "summary.md", "".join(f"**Data:** {c}.\n\n" for c in bundle.report.caveats)
                      + results_markdown(rows, metric_keys(bundle), bundle) + notes_markdown(summary["notes"]))
    atomic_write_text(base / "summary.csv", results_csv(rows, keys))
    return summary

"""Runs: resolve a config, train one model on one dataset for several seeds, write the run directories.

Each seed's directory ``<out>/<model>[-<ablation>]/<dataset>/seed_<seed>/`` holds ``config.yaml`` (fully
resolved), ``metrics.json``, ``predictions.csv`` (id, prediction, label), ``summary.md``, ``env.json`` (package
versions, git commit), ``data_report.json``, ``checkpoints/{best,last}.ckpt`` and CSV (or TensorBoard) logs. The
model directory gets ``summary.{md,csv,json}`` with mean ± std over the seeds. All files are written atomically.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

from mmfusion.config import (
    build_checked,
    check_bounds,
    check_model_values,
    load_yaml,
    parse_value,
    yaml_load,
)
from mmfusion.data import DatasetBundle, FusionDataset, load_data
from mmfusion.errors import ConfigError, DataError, did_you_mean
from mmfusion.io import atomic_write_json, atomic_write_text
from mmfusion.metrics import SENTIMENT_KEYS, metric_warnings
from mmfusion.models import config_class, list_models, load_pretrained, model_inputs
from mmfusion.runtime import launched_worker

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
"""Lightning's short precision names and the settings it reads them as."""
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def check_devices_available(tc: TrainConfig) -> None:
    """Refuse a GPU run on a machine without (enough) GPUs before any run directory is made (Lightning would stop
    with its own exception after the directory exists)."""
    if tc.accelerator in ("gpu", "cuda"):
        have = torch.cuda.device_count()
        if have == 0 and tc.accelerator == "gpu" and torch.backends.mps.is_available():
            have = 1
        if have < tc.devices:
            problem = "no GPU is visible to this process" if have == 0 else f"only {have} GPU(s) visible"
            raise ConfigError(f"{problem} (accelerator {tc.accelerator}; --accelerator cpu or auto trains on the CPU)",
                              source="train", key="devices", expected=f"at most {have} devices", actual=tc.devices)


@dataclass
class TrainConfig:
    """Training-loop settings (the ``train:`` section of a config file)."""

    batch_size: int = 32
    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam's L2 penalty (added to the gradient, as torch.optim.Adam does; not AdamW's)
    grad_clip: float = 0.8  # gradient-norm clipping (0 disables)
    patience: int = 10  # early stopping on validation loss, in epochs (0 disables)
    lr_patience: int = 5  # ReduceLROnPlateau on validation loss
    lr_factor: float = 0.5
    loss: Literal["mse", "l1"] = "mse"  # regression loss; emotion tasks always use cross-entropy
    precision: str | int = "32-true"  # Lightning precision: 32-true, 16-mixed, bf16-mixed (or 32, 16, bf16)
    accelerator: str = "auto"  # cpu, gpu, auto
    devices: int = 1
    num_workers: int = 0
    deterministic: bool = False
    logger: Literal["csv", "tensorboard"] = "csv"
    progress: bool = True
    threads: int = 0  # torch CPU threads (0: torch's default)

    def validate(self, source: str | None = None) -> None:
        self.precision = PRECISION_ALIASES.get(str(self.precision), str(self.precision))  # stored by full name
        if self.precision not in PRECISIONS:
            raise ConfigError("unknown precision", source=source, key="precision",
                              expected=f"one of {PRECISIONS} (or {', '.join(PRECISION_ALIASES)})",
                              actual=self.precision)
        if self.accelerator not in ACCELERATORS:
            raise ConfigError("unknown accelerator", source=source, key="accelerator",
                              expected=f"one of {ACCELERATORS}", actual=self.accelerator)
        check_bounds(self, source=source, above={"lr": 0, "lr_factor": 0}, below={"lr_factor": 1},
                     at_least={"batch_size": 1, "max_epochs": 1, "weight_decay": 0, "grad_clip": 0, "patience": 0,
                               "lr_patience": 0, "devices": 1, "num_workers": 0, "threads": 0})
        if self.logger == "tensorboard" and not any(importlib.util.find_spec(m) for m in ("tensorboard",
                                                                                           "tensorboardX")):
            # found now, before a run directory exists (Lightning would fail after making it)
            raise ConfigError("the TensorBoard logger needs tensorboard installed", source=source, key="logger",
                              expected="csv, or tensorboard with pip install 'mmfusion[tensorboard]'",
                              actual=self.logger)


@dataclass
class RunConfig:
    """A whole run: which model on which data, with what settings. YAML files hold overrides of these."""

    model: str = "lf_lstm"
    model_args: dict[str, Any] = field(default_factory=dict)
    ablation: str | None = None
    data: str = "synthetic"
    data_args: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: list[int] = field(default_factory=lambda: [1111])
    out: str = "runs"
    pretrained: dict[str, str] = field(default_factory=dict)  # branch -> local state-dict file

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TOP_KEYS = {f for f in RunConfig.__dataclass_fields__}


def resolve_config(file: str | None = None, flags: Mapping[str, Any] | None = None,
                   sets: Sequence[str] = ()) -> RunConfig:
    """Defaults <- YAML file <- command-line flags <- ``--set section.key=value`` overrides, all checked."""
    raw: dict[str, Any] = {"train": {}}
    sources: list[tuple[str, dict[str, Any]]] = []
    if file:
        sources.append((file, load_yaml(file)))
    if flags:
        sources.append(("command line", {k: v for k, v in flags.items() if v is not None}))
    overrides: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("--set needs key=value", source="--set", key=item, expected="key=value", actual=item)
        *path, last = key.split(".")  # model_args.kernels.audio=5 sets one entry of a table
        _merge(overrides, _nested(path, {last: parse_value(value)}))
    if overrides:
        sources.append(("--set", overrides))
    # where each value came from (the last source that set it), for error messages: top-level keys, model_args keys
    top_sources: dict[str, str] = {}
    arg_sources: dict[str, str] = {}
    for source, data in sources:
        for key, value in data.items():
            if key not in TOP_KEYS:
                raise ConfigError("unknown config key", source=source, key=key, expected=f"one of {sorted(TOP_KEYS)}",
                                  actual=key, hint=did_you_mean(key, TOP_KEYS))
            top_sources[key] = source
            if key in ("train", "model_args", "data_args"):
                if not isinstance(value, Mapping):
                    raise ConfigError("wrong type", source=source, key=key, expected="mapping", actual=value)
                _merge(raw.setdefault(key, {}), value)
                if key == "train":  # check train keys against TrainConfig now, naming this source
                    build_checked(TrainConfig, value, source=f"{source} [train]")
                if key == "model_args":
                    arg_sources.update(dict.fromkeys(value, f"{source} [model_args]"))
            else:
                raw[key] = value
    default_source = file or "command line"

    def named(err: ConfigError) -> ConfigError:
        """``err`` naming the source of its offending value, e.g. --set rather than the YAML file."""
        key = str(err.key)
        origin = arg_sources.get(key.removeprefix("model_args.").split(".")[0]) if key.startswith("model_args.") \
            or err.source == f"{default_source} [model_args]" else top_sources.get(key)
        return err if origin is None or origin == err.source else err.with_source(origin)

    train = build_checked(TrainConfig, raw.pop("train"), source="train")
    try:
        cfg = build_checked(RunConfig, raw, source=default_source)
        cfg.train = train
        models = list_models()
        if cfg.model not in models:
            raise ConfigError("unknown model", source=default_source, key="model", expected=f"one of {models}",
                              actual=cfg.model, hint=did_you_mean(cfg.model, models))
        cfg.model_args = resolve_model_args(cfg.model, cfg.model_args, cfg.ablation, source=default_source)
        if not cfg.seeds:
            raise ConfigError("need at least one seed", source=default_source, key="seeds",
                              expected="a list of ints", actual=cfg.seeds)
        if any(not 0 <= s < 2**32 for s in cfg.seeds):  # the range Lightning's seed_everything accepts
            raise ConfigError("seed out of range", source=default_source, key="seeds",
                              expected="0 <= seed < 2**32", actual=next(s for s in cfg.seeds if not 0 <= s < 2**32))
        if len(set(cfg.seeds)) != len(cfg.seeds):  # one run directory per seed: a repeat would stop at "exists"
            raise ConfigError("a seed is listed twice", source=default_source, key="seeds",
                              expected="distinct seeds", actual=cfg.seeds)
    except ConfigError as err:
        raise named(err) from None
    return cfg


def _nested(path: Sequence[str], leaf: dict[str, Any]) -> dict[str, Any]:
    """``["a", "b"]``, ``{"c": 1}`` -> ``{"a": {"b": {"c": 1}}}``."""
    for part in reversed(path):
        leaf = {part: leaf}
    return leaf


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Update ``into`` with ``new``, merging mappings found under the same key rather than replacing them."""
    for key, value in new.items():
        if isinstance(value, Mapping):
            if not isinstance(into.get(key), dict):
                into[key] = {}
            _merge(into[key], value)  # copied, never shared with ``new``
        else:
            into[key] = value


def resolve_model_args(model: str, args: Mapping[str, Any], ablation: str | None, *, source: str) -> dict[str, Any]:
    """Check model args against the model's config dataclass and apply a named ablation (its ``ABLATIONS``)."""
    cls = config_class(model)
    args = dict(args)
    if ablation:
        table = getattr(cls, "ABLATIONS", {}) if cls else {}
        if ablation not in table:
            with_some = [m for m in list_models() if getattr(config_class(m), "ABLATIONS", None)]
            raise ConfigError(f"unknown ablation for {model}" if table else f"{model} has no named ablations",
                              source=source, key="ablation", actual=ablation,
                              expected=f"one of {sorted(table)}" if table else f"a model that has some: {with_some}",
                              hint=did_you_mean(ablation, table))
        clash = {k: v for k, v in table[ablation].items() if k in args and args[k] != v}
        if clash:  # one of the two would be silently ignored
            key, value = next(iter(clash.items()))
            raise ConfigError(f"the ablation {ablation!r} sets {key}={value}; the config or --set says otherwise",
                              source=source, key=f"model_args.{key}", expected=value, actual=args[key])
        args = {**args, **table[ablation]}
    if cls is not None:
        check_model_values(build_checked(cls, args, source=f"{source} [model_args]"), source=f"{source} [model_args]")
    return args


# ----------------------------------------------------------------------------------------------------------------
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


def check_model_reads(model: str, bundle: DatasetBundle) -> None:
    """Refuse a model that cannot read this data (a clip network on feature sequences, or the other way round)
    before any run starts, naming the models that can."""
    have = bundle.inputs
    if model_inputs(model) != have:
        kind = {"sequences": "feature sequences", "clips": "raw video/audio clips"}
        raise ConfigError(f"{bundle.source} holds {kind[have]}, which {model} does not read", key="model",
                          expected=f"one of {list_models(have)}", actual=model)


def require_training_splits(bundle: DatasetBundle) -> None:
    """Training needs labelled train, valid and test splits: say which is missing before any run starts."""
    for split in ("train", "valid", "test"):
        bundle.split(split)


def make_loader(bundle: DatasetBundle, split: str, batch_size: int, shuffle: bool, num_workers: int = 0,
                seed: int = 0, *, labeled: bool = True) -> torch.utils.data.DataLoader:
    """Batches of ``split`` (a clear error if the bundle lacks it or, with ``labeled``, its labels)."""
    ds = FusionDataset(bundle.split(split, labeled=labeled))
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=ds.collate,
                                       num_workers=num_workers, generator=gen)


def write_predictions(path: Path, ids: Sequence[str], pred: np.ndarray, labels: np.ndarray | None, task: str,
                      emotions: Sequence[str]) -> None:
    """One row per clip: its id, the prediction and (where ``labels`` is given) the label; atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    known = labels is not None
    flat = labels.reshape(len(ids), -1) if known else None  # (N, 1) scores or classes, (N, E) emotions
    if task == "regression":
        w.writerow(["id", "prediction"] + ["label"] * known)
        for k, (i, p) in enumerate(zip(ids, pred.reshape(-1))):
            w.writerow([i, f"{p:.6f}"] + ([f"{flat[k, 0]:.6f}"] if known else []))
    elif task == "classification":
        w.writerow(["id", "prediction"] + ["label"] * known + ["prediction_name"] + ["label_name"] * known)
        for k, (i, p) in enumerate(zip(ids, pred.argmax(-1))):
            y = [int(flat[k, 0])] if known else []
            w.writerow([i, int(p), *y, emotions[int(p)], *[emotions[v] for v in y]])
    else:
        logits = pred.reshape(len(ids), len(emotions), 2)
        w.writerow(["id"] + [f"prediction_{e}" for e in emotions] + [f"label_{e}" for e in emotions] * known
                   + [f"p_{e}" for e in emotions])
        probs = torch.softmax(torch.from_numpy(logits), -1)[..., 1].numpy()
        for k, (i, row, pr) in enumerate(zip(ids, logits.argmax(-1), probs)):
            w.writerow([i, *row.tolist(), *(flat[k].tolist() if known else []), *[f"{v:.4f}" for v in pr]])
    atomic_write_text(path, buf.getvalue())


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


# settings that do not change what a run computes: how it is shown, logged or threaded
PRESENTATION_ONLY = {"out", "dataset", "train.progress", "train.logger", "train.threads", "train.num_workers"}


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved run config with the ``train`` section's keys spelt ``train.<key>``."""
    out = {k: v for k, v in config.items() if k != "train"}
    out.update({f"train.{k}": v for k, v in (config.get("train") or {}).items()})
    return out


def check_same_settings(run: Path, resolved: Mapping[str, Any]) -> int | None:
    """Refuse to reuse or continue ``run`` with other settings than it was made with (its ``config.yaml``): its
    results (or the epochs trained so far) would be reported under settings they did not come from. The one change
    allowed is a larger epoch budget (training on): then the run's ``max_epochs`` is returned, else None."""
    try:
        stored = yaml_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None  # nothing recorded (a run interrupted before it wrote its config): it starts afresh
    if not isinstance(stored, Mapping):
        return None
    before = _flat(stored)
    now = _flat(yaml_load(yaml.safe_dump(dict(resolved), sort_keys=False)))  # as it would be stored
    # a setting the stored config lacks (or has no more) came with another version of mmfusion: not compared
    differ = [k for k in sorted(set(before) & set(now)) if k not in PRESENTATION_ONLY and before[k] != now[k]]
    if differ == ["train.max_epochs"] and now["train.max_epochs"] > before["train.max_epochs"]:
        return int(before["train.max_epochs"])
    if differ:
        k = differ[0]
        raise ConfigError(f"this run was made with other settings ({', '.join(differ)}); --resume would report its "
                          "results under these. Give the run's settings, or another --out for a new run",
                          source=str(run / "config.yaml"), key=k, expected=before[k], actual=now[k])


def fit_one(cfg: RunConfig, bundle: DatasetBundle, seed: int, *, resume: bool = False,
            console: Any = None) -> dict[str, Any]:
    """Train and test one seed. With ``resume``, a finished run is read back and an interrupted one continues from
    ``checkpoints/last.ckpt`` (epoch, optimiser, scheduler and early-stopping state restored)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from mmfusion.engine.callbacks import EpochTimer
    from mmfusion.engine.system import FusionSystem, compute_metrics

    run = run_dir_for(cfg, bundle, seed)
    metrics_file, last = run / "metrics.json", run / "checkpoints" / "last.ckpt"
    worker = launched_worker()  # a further device's process: it trains in lockstep, the first one writes
    if run.exists() and not resume and not worker:
        raise ConfigError("run directory already exists; pass --resume to continue or reuse it, or choose --out",
                          source=str(run), key="out", expected="a new directory", actual=str(run))
    resolved = cfg.as_dict() | {"seeds": [seed], "dataset": bundle.describe()}
    extend_from = check_same_settings(run, resolved) if resume and not worker else None
    if extend_from is not None and metrics_file.exists():  # a finished run, trained on to a larger budget
        done = json.loads(metrics_file.read_text())
        if done.get("diverged") or int(done.get("epochs_run", extend_from)) < extend_from:
            why = "diverged" if done.get("diverged") else f"stopped early after {done.get('epochs_run')} epochs"
            raise ConfigError(f"this run {why}; more epochs would not train it further. Choose another --out for a "
                              "new run", source=str(run / "metrics.json"), key="train.max_epochs",
                              expected=extend_from, actual=cfg.train.max_epochs)
        kept = run / f"metrics_{extend_from}_epochs.json"
        metrics_file.replace(kept)  # its results stay, under a name that says what they are
        if console:
            console.print(f"{run}: training on from {extend_from} to {cfg.train.max_epochs} epochs (the "
                          f"{extend_from}-epoch results are kept in {kept.name})", style="yellow", markup=False)
    if resume and metrics_file.exists():
        if console:
            console.print(f"{run}: finished earlier, reusing its results", style="dim", markup=False)
        return json.loads(metrics_file.read_text())
    ckpt_path = str(last) if resume and last.exists() else None
    resumed_from = None
    if ckpt_path:
        try:
            resumed_from = int(torch.load(ckpt_path, map_location="cpu", weights_only=True)["epoch"])
        except Exception as exc:  # noqa: BLE001 - a damaged file: say which, and how to start over
            raise DataError(f"cannot resume from this checkpoint ({type(exc).__name__}); delete it to train the "
                            "run from the start", file=last) from None
        if console:
            console.print(f"{run}: resuming from {last} (epoch {resumed_from} finished)", style="yellow", markup=False)
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if not worker:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        atomic_write_json(run / "env.json", env_info())
        atomic_write_json(run / "data_report.json", bundle.report.as_dict())

    L.seed_everything(seed, workers=True, verbose=False)
    system = FusionSystem(cfg.model, cfg.model_args, bundle.feature_dims, bundle.output_dim, bundle.task,
                          bundle.emotions, asdict(tc), meta={"seed": seed, "data": bundle.source,
                                                             "ablation": cfg.ablation, "data_spec": cfg.data,
                                                             "data_args": dict(cfg.data_args)})
    if cfg.pretrained and not ckpt_path:
        loaded = load_pretrained(system.model, cfg.pretrained)
        if console:
            console.print(f"pretrained weights: {loaded}", style="dim", markup=False)
    ckpt_cb = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor="val_loss", mode="min",
                              save_top_k=1, enable_version_counter=False)
    # Lightning's save_last only writes when a best checkpoint is written; resuming needs every epoch's state.
    last_cb = ModelCheckpoint(dirpath=run / "checkpoints", filename="last", monitor=None, save_top_k=1,
                              every_n_epochs=1, enable_version_counter=False)
    timer = EpochTimer()
    callbacks: list[Any] = [ckpt_cb, last_cb, timer]
    if tc.patience > 0:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=tc.patience))
    if tc.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    # one log version per (re)start, so resuming never overwrites the logs of the interrupted part
    if tc.logger == "tensorboard":
        logger: Any = TensorBoardLogger(run, name="logs")
    else:
        logger = CSVLogger(run, name="logs")
    trainer = L.Trainer(
        max_epochs=tc.max_epochs, accelerator=tc.accelerator, devices=tc.devices, precision=tc.precision,
        gradient_clip_val=tc.grad_clip or None, deterministic=tc.deterministic, callbacks=callbacks, logger=logger,
        default_root_dir=run, enable_progress_bar=tc.progress, enable_model_summary=False,
        log_every_n_steps=10, num_sanity_val_steps=0,
    )
    train_loader = make_loader(bundle, "train", tc.batch_size, True, tc.num_workers, seed)
    val_loader = make_loader(bundle, "valid", tc.batch_size, False, tc.num_workers)
    t0 = time.perf_counter()
    with ctrl_c_is_an_interrupt(trainer):
        trainer.fit(system, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - t0
    if worker:  # the first process scores the test split and writes the results
        return {"seed": seed, "model": cfg.model, "ablation": cfg.ablation}
    diverged = system.diverged
    score = ckpt_cb.best_model_score  # None only where no validation ran
    if (diverged is not None and score is None) or (score is not None and not bool(torch.isfinite(score))):
        where = (f"the training loss became {diverged['loss']} at epoch {diverged['epoch']}, step "
                 f"{diverged['step']}" if diverged else "the validation loss was not finite")
        raise ConfigError(f"training diverged: {where}, before any epoch with a finite validation loss; nothing to "
                          "test. Lower the learning rate or clip gradients (train.grad_clip)", source=str(run),
                          key="train.lr", expected="a smaller value", actual=tc.lr)
    if diverged is not None and console:
        console.print(f"{run}: training diverged (loss {diverged['loss']} at epoch {diverged['epoch']}, step "
                      f"{diverged['step']}); stopped there and tested the best checkpoint before it",
                      style="bold yellow", markup=False)
    best = ckpt_cb.best_model_path or str(last)
    state = torch.load(best, map_location="cpu", weights_only=True)
    system.load_state_dict(state["state_dict"])
    test_loader = make_loader(bundle, "test", tc.batch_size, False, tc.num_workers)
    # a multi-device predict loop would give each process only its share of the test split
    scorer = trainer if tc.devices == 1 else L.Trainer(
        accelerator=tc.accelerator, devices=1, precision=tc.precision, logger=False, enable_progress_bar=False,
        enable_model_summary=False)
    ids, pred, labels, pred_seconds = predict_arrays(scorer, system, test_loader)
    metrics = compute_metrics(pred, labels, bundle.task, bundle.emotions)
    notes = metric_warnings(pred, labels, bundle.task)
    for warning in notes if console else []:
        console.print(f"{run}: warning: {warning}", style="bold yellow", markup=False)
    extra: dict[str, Any] = {}
    if "terms" in bundle.splits["test"].extras and bundle.task == "regression":
        from mmfusion.data.synthetic import term_capture

        extra = term_capture(pred, bundle.splits["test"].extras["terms"])
    from mmfusion.engine.diagnostics import modality_separability

    extra.update(modality_separability(system.model, bundle))  # MEA: are the agnostic codes agnostic?
    result = {
        **metrics, **extra,
        "best_epoch": int(state["epoch"]), "best_val_loss": float(ckpt_cb.best_model_score or float("nan")),
        "epochs_run": int(trainer.current_epoch), "params": int(sum(p.numel() for p in system.model.parameters())),
        "train_seconds_per_epoch": float(np.mean(timer.seconds)) if timer.seconds else float("nan"),
        "fit_seconds": fit_seconds, "test_ms_per_sample": 1000.0 * pred_seconds / max(len(ids), 1),
        "seed": seed, "model": cfg.model, "ablation": cfg.ablation, "data": bundle.source,
        "resumed_from_epoch": resumed_from, "diverged": diverged, "warnings": notes,
        "data_caveats": list(bundle.report.caveats),  # e.g. "non-standard split": travels with every number
        "learning_curve": list(system.curve),  # per epoch of this process: train/validation losses, diagnostics
    }
    write_predictions(run / "predictions.csv", ids, pred, labels, bundle.task, bundle.emotions)
    atomic_write_text(run / "summary.md", run_markdown(cfg, bundle, result))
    atomic_write_json(metrics_file, result)
    return result


DIAGNOSTIC_PREFIXES = ("capture_", "disc_acc_", "probe_acc_", "modality_chance")
"""Per-run diagnostics averaged over seeds beside the metrics: planted-term capture (built-in benchmark) and the
modality separability of decoupled codes (:mod:`mmfusion.engine.diagnostics`)."""


def metric_keys(bundle: DatasetBundle) -> list[str]:
    if bundle.task == "regression":
        return list(SENTIMENT_KEYS)
    if bundle.task == "classification":
        return ["acc", "f1"]
    return [f"{p}_{e}" for e in bundle.emotions for p in ("acc", "f1")] + ["acc_mean", "f1_mean"]


def run_markdown(cfg: RunConfig, bundle: DatasetBundle, result: Mapping[str, Any]) -> str:
    keys = metric_keys(bundle)
    lines = [f"# {cfg.model}{' (' + cfg.ablation + ')' if cfg.ablation else ''} on {bundle.describe()}", "",
             f"Seed {result['seed']}; best epoch {result['best_epoch']} of {result['epochs_run']} (selected on "
             f"validation loss); {result['params']:,} parameters.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
             "| " + " | ".join(f"{result[k]:.4f}" for k in keys) + " |", ""]
    if bundle.bayes:
        lines += ["Bayes-optimal (expected on this test split):", "",
                  "| " + " | ".join(f"{bundle.bayes[k]:.4f}" for k in keys) + " |", ""]
    if bundle.task == "regression":
        lines.append("Acc2/F1 `_non0`: zero labels excluded (MulT convention); `_has0`: negative vs non-negative.")
    lines += diagnostics_markdown(result)
    lines += [f"\n**Warning:** {w}." for w in result.get("warnings", [])]
    lines += [f"\n**Data:** {c}." for c in bundle.report.caveats]
    return "\n".join(lines) + "\n"


def diagnostics_markdown(result: Mapping[str, Any]) -> list[str]:
    """Summary lines for a run's diagnostics: modality separability of the codes and the learning curve."""
    lines: list[str] = []
    seps = [(b, s) for b in ("agnostic", "exclusive") for s in ("valid", "test")
            if f"probe_acc_{b}_{s}" in result or f"disc_acc_{b}_{s}" in result]
    if seps:
        chance = result.get("modality_chance", float("nan"))
        lines += ["", f"Which modality a code came from (accuracy; chance {chance:.3f}; agnostic codes should sit "
                  "near chance, exclusive codes near 1):", "", "| codes | split | modality discriminator | fresh "
                  "linear probe |", "|---|---|---|---|"]
        for b, s in seps:
            d, p = result.get(f"disc_acc_{b}_{s}"), result.get(f"probe_acc_{b}_{s}")
            lines.append(f"| {b} | {s} | {'–' if d is None else f'{d:.3f}'} | {'–' if p is None else f'{p:.3f}'} |")
    curve = [p for p in result.get("learning_curve", []) if "train_task_loss" in p and "val_loss" in p]
    if curve:
        lines += ["", "Learning curve (task loss; validation loss chooses the checkpoint):", "",
                  "| epoch | train | validation |", "|---|---|---|"]
        lines += [f"| {int(p['epoch'])} | {p['train_task_loss']:.4f} | {p['val_loss']:.4f} |" for p in curve]
    return lines


def run_notes(spec: str, results: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a mean ± std would hide: the seeds of ``spec`` that diverged or whose predictions collapsed."""
    notes = []
    for r in results:
        if r.get("diverged"):
            d = r["diverged"]
            notes.append(f"{spec}, seed {r['seed']}: training diverged (loss {d['loss']} at epoch {d['epoch']}, "
                         f"step {d['step']}); the best checkpoint before it was tested")
        notes += [f"{spec}, seed {r['seed']}: {w}" for w in r.get("warnings", [])]
    return notes


def notes_markdown(notes: Sequence[str]) -> str:
    """The :func:`run_notes` of a table as a Markdown list under it ("" when there are none)."""
    if not notes:
        return ""
    return "\n**Runs to look at** (included in the means above):\n\n" + "".join(f"- {n}.\n" for n in notes)


def summarize(results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean, sample std (ddof=1; 0 for one seed) and count ``n`` of each key over seeds."""
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in results if k in r], dtype=np.float64)
        if len(vals):
            out[k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                      "n": len(vals)}
    return out


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
                      f"{', '.join(map(str, cfg.seeds))}.\n\n" + _rows_markdown(rows, shown)
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


def fmt(stat: Mapping[str, float] | None, digits: int = 4, key: str = "") -> str:
    """``mean ± std``, or the value alone where it comes from one run (``n`` 1); counts (parameters) as plain
    integers, times with two decimals."""
    if not stat:
        return "–"
    if key == "params":
        return f"{stat['mean']:,.0f}"
    if key.endswith(("_seconds_per_epoch", "_ms_per_sample")):
        digits = 2
    if stat.get("n") == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _rows_markdown(rows: Sequence[tuple[str, Mapping[str, Any]]], cols: Sequence[str]) -> str:
    out = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, stats in rows:
        out.append(f"| {name} | " + " | ".join(fmt(stats.get(k), key=k) for k in cols) + " |")
    return "\n".join(out) + "\n"


def results_markdown(rows: Sequence[tuple[str, Mapping[str, Any]]], keys: Sequence[str], bundle: DatasetBundle,
                     extra_cols: Sequence[str] = ()) -> str:
    cols = list(keys) + list(extra_cols)
    out = _rows_markdown(rows, cols).rstrip("\n").split("\n")
    if bundle.bayes:
        out.append("| **Bayes-optimal** | " + " | ".join(
            f"{bundle.bayes[k]:.4f}" if k in bundle.bayes else "–" for k in cols) + " |")
    return "\n".join(out) + "\n"


def results_csv(rows: Sequence[tuple[str, Mapping[str, Any]]], keys: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")])
    for name, stats in rows:
        w.writerow([name] + [f"{stats[k][s]:.6g}" if k in stats else "" for k in keys for s in ("mean", "std")])
    return buf.getvalue()

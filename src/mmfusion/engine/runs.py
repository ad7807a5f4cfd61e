"""Runs: resolve a config, train one model on one dataset for several seeds, write the run directories.

Each seed's directory ``<out>/<model>[-<ablation>]/<dataset>/seed_<seed>/`` holds ``config.yaml`` (fully
resolved, every model argument included), ``metrics.json``, ``predictions.csv`` (id, prediction, label),
``summary.md``, ``env.json`` (package versions, git commit), ``data_report.json``, ``checkpoints/{best,last}.ckpt``
(each also holding the settings record and the random generators' states), CSV (or TensorBoard) logs and ``.lock``
(see :func:`mmfusion.io.run_lock`). The model directory gets ``summary.{md,csv,json}`` with mean ± std over the
seeds. All files are written atomically. What is guaranteed, and the tests behind it: ``docs/reliability.md``.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import platform
import shutil
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

from mmfusion.config import (
    build_checked,
    check_bounds,
    check_model_values,
    load_yaml,
    parse_value,
    yaml_dump,
    yaml_load,
)
from mmfusion.data import HOW_READ, DatasetBundle, FusionDataset, load_data
from mmfusion.errors import ConfigError, DataError, did_you_mean
from mmfusion.io import atomic_write_json, atomic_write_many, atomic_write_text, json_text, run_lock
from mmfusion.metrics import SENTIMENT_KEYS, metric_warnings
from mmfusion.models import config_class, list_models, load_pretrained, model_inputs
from mmfusion.runtime import launched_worker

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
"""Lightning's short precision names and the settings it reads them as."""
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp")
"""Lightning's distributed strategies a run may name (auto: DDP when there are several processes)."""


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

    batch_size: int = 32  # the global batch: split evenly across the processes of a multi-device/-node run
    max_epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam's L2 penalty (added to the gradient, as torch.optim.Adam does; not AdamW's)
    grad_clip: float = 0.8  # gradient-norm clipping (0 disables)
    patience: int = 10  # early stopping on validation loss, in epochs (0 disables)
    lr_patience: int = 5  # ReduceLROnPlateau on validation loss
    lr_factor: float = 0.5
    lr_schedule: Literal["plateau", "constant"] = "plateau"  # constant: no learning-rate reduction at all
    branch_losses: bool = False  # train on the sum of the branches' own losses (models with "branches": msaf_ntu)
    reference_selection: bool = False  # select the checkpoint on the TEST split's main metric, as the MSAF
    # authors did (optimistic; for reproducing their published numbers only)
    loss: Literal["mse", "l1"] = "mse"  # regression loss; emotion tasks always use cross-entropy
    precision: str | int = "32-true"  # Lightning precision: 32-true, 16-mixed, bf16-mixed (or 32, 16, bf16)
    accelerator: str = "auto"  # cpu, gpu, auto
    devices: int = 1  # devices (processes) per node
    num_nodes: int = 1
    strategy: str = "auto"  # auto, ddp, ddp_spawn or fsdp (GPUs only)
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
                               "lr_patience": 0, "devices": 1, "num_nodes": 1, "num_workers": 0, "threads": 0})
        if self.strategy not in STRATEGIES:
            raise ConfigError("unknown strategy", source=source, key="strategy", expected=f"one of {STRATEGIES}",
                              actual=self.strategy, hint=did_you_mean(self.strategy, STRATEGIES))
        if self.strategy == "fsdp" and self.accelerator not in ("gpu", "cuda"):  # Lightning's FSDP needs CUDA
            raise ConfigError("the fsdp strategy shards a model over GPUs", source=source, key="strategy",
                              expected="ddp or ddp_spawn, or fsdp with --accelerator gpu", actual=self.strategy)
        processes = self.devices * self.num_nodes
        if self.batch_size % processes:  # each process takes an equal share of every global batch
            raise ConfigError(f"the global batch is split evenly across the {processes} processes "
                              f"({self.devices} device(s) x {self.num_nodes} node(s))", source=source,
                              key="batch_size", expected=f"a multiple of {processes}", actual=self.batch_size)
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
    pretrained: dict[str, str] = field(default_factory=dict)  # branch -> local state-dict file ("model": all)
    pretrained_partial: bool = False  # load what matches of a pretrained file instead of refusing a partial match

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
        _merge(overrides, _nested(path, {last: parse_value(value, key=key)}))
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
    ds = FusionDataset(bundle.split(split, labeled=labeled), augment=shuffle)  # shuffled: the training batches
    # shuffled: epoch e's order depends on (seed, e) only, so a resumed run sees the uninterrupted run's batches
    sampler = _epoch_sampler(len(ds), seed) if shuffle else None
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=ds.collate,
                                       num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def _epoch_sampler(n: int, seed: int) -> torch.utils.data.Sampler[int]:
    from mmfusion.engine.resume import EpochSampler

    return EpochSampler(n, seed)


def training_loaders(bundle: DatasetBundle, tc: TrainConfig, seed: int) -> tuple[Any, Any]:
    """The train and valid loaders of a run: the train split in global batches of ``tc.batch_size`` shuffled from
    ``seed``, each process taking its share (:class:`~mmfusion.engine.distributed.GlobalBatchSampler`; one process
    draws the batches ``make_loader(..., shuffle=True)`` would), and the valid split interleaved across the processes
    (:class:`~mmfusion.engine.distributed.ShardSampler`) for the whole-split metrics."""
    from mmfusion.engine.distributed import GlobalBatchSampler, ShardSampler

    train = FusionDataset(bundle.split("train"), augment=True)
    # reference_selection: the checkpoint is chosen on the test split itself, exactly as the MSAF authors did
    valid = FusionDataset(bundle.split("test" if tc.reference_selection else "valid"))
    gen = torch.Generator().manual_seed(seed)
    order = _epoch_sampler(len(train), seed)  # epoch e's order depends on (seed, e) only: a resume sees the same
    train_loader = torch.utils.data.DataLoader(train, batch_sampler=GlobalBatchSampler(order, tc.batch_size),
                                               collate_fn=train.collate, num_workers=tc.num_workers, generator=gen)
    val_loader = torch.utils.data.DataLoader(valid, batch_size=tc.batch_size, sampler=ShardSampler(valid),
                                             collate_fn=valid.collate, num_workers=tc.num_workers)
    return train_loader, val_loader


def write_predictions(path: Path, ids: Sequence[str], pred: np.ndarray, labels: np.ndarray | None, task: str,
                      emotions: Sequence[str]) -> None:
    """One row per clip: its id, the prediction and (where ``labels`` is given) the label; atomically."""
    atomic_write_text(path, predictions_csv(ids, pred, labels, task, emotions))


def predictions_csv(ids: Sequence[str], pred: np.ndarray, labels: np.ndarray | None, task: str,
                    emotions: Sequence[str]) -> str:
    """The text of :func:`write_predictions`' file."""
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
    return buf.getvalue()


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
PRESENTATION_ONLY = {"out", "dataset", "train.progress", "train.logger", "train.threads", "train.num_workers",
                     "train.strategy"}


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
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
    then = _flat(before)
    now = _flat(yaml_load(yaml_dump(dict(resolved))))  # as it would be stored
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
    import lightning as L
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from mmfusion.engine.callbacks import EpochTimer
    from mmfusion.engine.resume import AtomicCheckpointIO, RandomStates, read_metrics
    from mmfusion.engine.system import FusionSystem, compute_metrics

    run = run_dir_for(cfg, bundle, seed)
    metrics_file, last = run / "metrics.json", run / "checkpoints" / "last.ckpt"
    worker = launched_worker()
    resolved = cfg.as_dict() | {"model_args": full_args, "seeds": [seed], "dataset": bundle.describe()}
    extend_from = check_same_settings(run, resolved) if resume and not worker else None
    previous: dict[str, Any] | None = None  # a finished run's results, while it is trained on to a larger budget
    if extend_from is not None and metrics_file.exists():
        previous = read_metrics(metrics_file)
        if previous.get("diverged") or int(previous.get("epochs_run", extend_from)) < extend_from:
            why = ("diverged" if previous.get("diverged")
                   else f"stopped early after {previous.get('epochs_run')} epochs")
            raise ConfigError(f"this run {why}; more epochs would not train it further. Choose another --out for a "
                              "new run", source=str(metrics_file), key="train.max_epochs",
                              expected=extend_from, actual=cfg.train.max_epochs)
        if console:
            console.print(f"{run}: training on from {extend_from} to {cfg.train.max_epochs} epochs (the "
                          f"{extend_from}-epoch results will be kept in metrics_{extend_from}_epochs.json)",
                          style="yellow", markup=False)
    elif resume and metrics_file.exists():
        done = read_metrics(metrics_file)
        if console:
            console.print(f"{run}: finished earlier, reusing its results", style="dim", markup=False)
        return done
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

    def records() -> dict[Path, str]:
        return {run / "config.yaml": yaml_dump(resolved), run / "env.json": json_text(env_info()),
                run / "data_report.json": json_text(bundle.report.as_dict())}

    if not worker and previous is None:  # (training on: the records change only once the longer run finished)
        atomic_write_many({path: text.encode("utf-8") for path, text in records().items()})

    if tc.strategy == "ddp_spawn":  # the processes receive the model through shared memory: named files in
        # /dev/shm rather than passed file descriptors, which some sandboxes and containers refuse
        torch.multiprocessing.set_sharing_strategy("file_system")
    L.seed_everything(seed, workers=True, verbose=False)
    system = FusionSystem(cfg.model, full_args, bundle.feature_dims, bundle.output_dim, bundle.task,
                          bundle.emotions, asdict(tc), meta={"seed": seed, "data": bundle.source,
                                                             "ablation": cfg.ablation, "data_spec": cfg.data,
                                                             "data_args": dict(cfg.data_args),
                                                             "feature_set": bundle.feature_set,
                                                             "run_config": yaml_load(yaml_dump(resolved))})
    if cfg.pretrained and not ckpt_path:
        fold = cfg.data_args.get("fold")
        files = {b: p.replace("{fold}", str(fold + 1)) if isinstance(fold, int) else p
                 for b, p in cfg.pretrained.items()}  # {fold}: the authors' 1-based fold_K files
        loaded = load_pretrained(system.model, files, partial=cfg.pretrained_partial)
        atomic_write_json(run / "pretrained.json", {"files": files, "branches": loaded})
        if console:
            for branch, info in loaded.items():
                console.print(f"pretrained {branch}: {info['loaded']} tensors from {files[branch]} "
                              f"({info['read_as']}); kept at their initial values: {len(info['kept'])}"
                              + (f" {info['kept'][:6]}" if info["kept"] else ""), markup=False)
    from mmfusion.metrics import main_metric

    select_key, select_mode = main_metric(bundle.task) if tc.reference_selection else ("loss", "min")
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
    if tc.logger == "tensorboard":
        logger: Any = TensorBoardLogger(run, name="logs")
    else:
        logger = CSVLogger(run, name="logs")
    # Lightning detects torchrun's and SLURM's environment variables itself; the loaders split the batches across
    # the processes (training_loaders), so Lightning's own distributed sampler is not used
    trainer = L.Trainer(
        max_epochs=tc.max_epochs, accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes,
        strategy=tc.strategy, precision=tc.precision, use_distributed_sampler=False,
        gradient_clip_val=tc.grad_clip or None, deterministic=tc.deterministic, callbacks=every, logger=logger,
        default_root_dir=run, enable_progress_bar=tc.progress, enable_model_summary=False,
        log_every_n_steps=10, num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()],
    )
    train_loader, val_loader = training_loaders(bundle, tc, seed)
    t0 = time.perf_counter()
    with ctrl_c_is_an_interrupt(trainer), _naming_failed_writes(run):
        trainer.fit(system, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
    fit_seconds = time.perf_counter() - t0
    if worker:  # the first process scores the test split and writes the results
        return {"seed": seed, "model": cfg.model, "ablation": cfg.ablation}
    diverged = system.diverged
    epochs_run = int(trainer.current_epoch)
    if tc.strategy == "ddp_spawn" and last.exists():  # trained in spawned processes: Lightning hands back the best
        # checkpoint's path and the weights, not the callbacks' state; the last checkpoint has it
        epochs_run, ckpt_cb.best_model_score = _spawned_state(last, ckpt_cb.best_model_score)
    score = ckpt_cb.best_model_score  # None only where no validation ran
    if (diverged is not None and score is None) or (score is not None and not bool(torch.isfinite(score))):
        where = (f"the training loss became {diverged['loss']} at epoch {diverged['epoch']}, step "
                 f"{diverged['step']}" if diverged else "the validation loss was not finite")
        raise ConfigError(f"training diverged: {where}, before any epoch with a finite validation loss; nothing to "
                          "test. Lower the learning rate or clip gradients (train.grad_clip), or rescale the data "
                          f"if its values are extreme (largest |value| in the training split: "
                          f"{data_magnitude(bundle)})", source=str(run), key="train.lr", expected="a smaller value",
                          actual=tc.lr)
    if diverged is not None and console:
        console.print(f"{run}: training diverged (loss {diverged['loss']} at epoch {diverged['epoch']}, step "
                      f"{diverged['step']}; largest |value| in the training split: {data_magnitude(bundle)}); "
                      "stopped there and tested the best checkpoint before it", style="bold yellow", markup=False)
    best = ckpt_cb.best_model_path or str(last)
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
    extra: dict[str, Any] = {}
    if "terms" in bundle.splits["test"].extras and bundle.task == "regression":
        from mmfusion.data.synthetic import term_capture

        extra = term_capture(pred, bundle.splits["test"].extras["terms"])
    result = {
        **metrics, **extra,
        "best_epoch": int(state["epoch"]), "best_val_loss": float(ckpt_cb.best_model_score or float("nan")),
        "epochs_run": epochs_run, "params": int(sum(p.numel() for p in system.model.parameters())),
        "train_seconds_per_epoch": float(np.mean(timer.seconds)) if timer.seconds else float("nan"),
        "fit_seconds": fit_seconds, "test_ms_per_sample": 1000.0 * pred_seconds / max(len(ids), 1),
        "seed": seed, "model": cfg.model, "ablation": cfg.ablation, "data": bundle.source,
        "resumed_from_epoch": resumed_from, "diverged": diverged, "warnings": notes,
        "data_caveats": list(bundle.report.caveats),  # e.g. "non-standard split": travels with every number
    }
    files = {run / "predictions.csv": predictions_csv(ids, pred, labels, bundle.task, bundle.emotions),
             run / "summary.md": run_markdown(cfg, bundle, result)}
    if previous is not None:  # the shorter run's results stay, under a name that says what they are
        files |= {run / f"metrics_{extend_from}_epochs.json": json_text(previous), **records()}
    files[metrics_file] = json_text(result)  # renamed last: a run is finished once its metrics.json is there
    # all written in full before any replaces its old version: a failure (a full disk) leaves the results as they were
    atomic_write_many({path: text.encode("utf-8") for path, text in files.items()})
    return result


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
    lines += [f"\n**Warning:** {w}." for w in result.get("warnings", [])]
    lines += [f"\n**Data:** {c}." for c in bundle.report.caveats]
    return "\n".join(lines) + "\n"


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
    keys = metric_keys(bundle) + [k for k in results[0] if k.startswith("capture_")] + [
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

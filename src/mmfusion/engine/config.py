"""Run settings: :class:`RunConfig` and its ``train:`` section :class:`TrainConfig`, resolved from defaults, a
YAML file, command-line flags and ``--set`` overrides (:func:`resolve_config`), every value checked.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from mmfusion.config import (
    build_checked,
    build_model_config,
    check_bounds,
    load_yaml,
    parse_value,
)
from mmfusion.errors import ConfigError, did_you_mean
from mmfusion.models import config_class, list_models

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
    lr_factor: float = 0.5  # what each reduction multiplies the rate by (plateau and multistep)
    # plateau: x lr_factor after lr_patience epochs without a better validation loss; constant: no reduction at
    # all; multistep: x lr_factor before each epoch of lr_milestones
    lr_schedule: Literal["plateau", "constant", "multistep"] = "plateau"
    lr_milestones: list[int] = field(default_factory=list)  # multistep: 0-based epochs, increasing
    branch_losses: bool = False  # train on the sum of the branches' own losses (models with "branches": msaf_ntu)
    branch_optimizers: bool = False  # with branch_losses: one Adam per branch (its parameters and the shared
    # fusion blocks), stepped in turn on its own loss after its own forward pass, as the MSAF authors train NTU
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
        self._check_schedule(source)
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

    def _check_schedule(self, source: str | None) -> None:
        """Milestones, when given, are increasing epochs >= 1."""
        m = self.lr_milestones
        if not isinstance(m, list) or any(isinstance(e, bool) or not isinstance(e, int) for e in m):
            raise ConfigError("milestones are a list of epochs", source=source, key="lr_milestones",
                              expected="a list of epochs, e.g. [5, 20]", actual=m)
        if m and (m[0] < 1 or any(b <= a for a, b in zip(m, m[1:]))):
            raise ConfigError("milestones must be increasing epochs of at least 1 (the rate is reduced before each; "
                              "epoch 0 trains at lr)", source=source, key="lr_milestones", expected="e.g. [5, 20]",
                              actual=m)

    def check_combination(self, source: str | None = None) -> None:
        """The settings that depend on each other, once every source is merged: milestones with (and only with) the
        multistep schedule; per-branch optimisers only on per-branch losses."""
        if self.lr_schedule == "multistep" and not self.lr_milestones:
            raise ConfigError("the multistep schedule needs its milestone epochs", source=source,
                              key="lr_milestones", expected="a non-empty list of epochs, e.g. [5, 20]",
                              actual=self.lr_milestones)
        if self.lr_schedule != "multistep" and self.lr_milestones:
            raise ConfigError("lr_milestones apply only to the multistep schedule", source=source,
                              key="lr_milestones", expected="[] or lr_schedule: multistep",
                              actual=f"{self.lr_milestones} with lr_schedule {self.lr_schedule}")
        if self.branch_optimizers and not self.branch_losses:
            raise ConfigError("per-branch optimisers step on the branches' own losses", source=source,
                              key="branch_optimizers", expected="branch_losses: true as well", actual=True)


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


def parse_set(item: str, source: str = "--set") -> tuple[str, Any]:
    """One ``--set key=value`` item: its (dotted) key and its value read as YAML. The one place a ``--set`` is
    parsed, for ``fit``/``bench``/``tune`` (``section.key=value``) and for the reader options of the other commands."""
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError("--set needs key=value", source=source, key=item, expected="key=value", actual=item)
    return key, parse_value(value, key=key)


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """Repeated ``--set section.key=value`` items as nested overrides (``model_args.kernels.audio=5`` sets one entry
    of a table)."""
    overrides: dict[str, Any] = {}
    for item in sets:  # one at a time: a second table given for the same key merges into the first
        apply_dotted(overrides, dict([parse_set(item)]))
    return overrides


def apply_dotted(raw: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Set each dotted key of ``values`` (``train.lr``, ``model_args.kernels.audio``) in the nested ``raw``."""
    for key, value in values.items():
        *path, last = key.split(".")
        _merge(raw, _nested(path, {last: value}))


def data_args_from_sets(sets: Sequence[str]) -> dict[str, Any]:
    """Reader options from repeated ``--set key=value`` flags (``data_args.key=value``, as ``fit`` spells them,
    too)."""
    return {key.removeprefix("data_args."): value for key, value in map(parse_set, sets)}


def resolve_config(file: str | Sequence[str] | None = None, flags: Mapping[str, Any] | None = None,
                   sets: Sequence[str] = ()) -> RunConfig:
    """Defaults <- YAML file(s), in order <- command-line flags <- ``--set section.key=value`` overrides, all
    checked. Several files layer as one: a later file's value wins, mappings merge key by key."""
    files = [file] if isinstance(file, str) else list(file or ())
    sources: list[tuple[str, dict[str, Any]]] = [(f, load_yaml(f)) for f in files]
    file = files[-1] if files else None
    if flags:
        sources.append(("command line", {k: v for k, v in flags.items() if v is not None}))
    overrides = parse_sets(sets)
    if overrides:
        sources.append(("--set", overrides))
    raw, top_sources, arg_sources = _layered(sources)
    default_source = file or "command line"

    def named(err: ConfigError) -> ConfigError:
        """``err`` naming the source of its offending value, e.g. --set rather than the YAML file."""
        key = str(err.key)
        origin = arg_sources.get(key.removeprefix("model_args.").split(".")[0]) if key.startswith("model_args.") \
            or err.source == f"{default_source} [model_args]" else top_sources.get(key)
        return err if origin is None or origin == err.source else err.with_source(origin)

    train = build_checked(TrainConfig, raw.pop("train"), source="train")
    train.check_combination(source="train")
    try:
        cfg = build_checked(RunConfig, raw, source=default_source)
        cfg.train = train
        _check_run(cfg, default_source)
    except ConfigError as err:
        raise named(err) from None
    return cfg


def _layered(sources: Sequence[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, str],
                                                                       dict[str, str]]:
    """The ``sources`` merged in order, and where each value came from (the last source that set it), for error
    messages: of the top-level keys, and of the ``model_args`` keys."""
    raw: dict[str, Any] = {"train": {}}
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
    return raw, top_sources, arg_sources


def _check_run(cfg: RunConfig, source: str) -> None:
    """The model exists, its arguments (and ablation) fit it, and the seeds are usable; ``cfg.model_args`` resolved."""
    models = list_models()
    if cfg.model not in models:
        raise ConfigError("unknown model", source=source, key="model", expected=f"one of {models}",
                          actual=cfg.model, hint=did_you_mean(cfg.model, models))
    cfg.model_args = resolve_model_args(cfg.model, cfg.model_args, cfg.ablation, source=source)
    if not cfg.seeds:
        raise ConfigError("need at least one seed", source=source, key="seeds",
                          expected="a list of ints", actual=cfg.seeds)
    if any(not 0 <= s < 2**32 for s in cfg.seeds):  # the range Lightning's seed_everything accepts
        raise ConfigError("seed out of range", source=source, key="seeds",
                          expected="0 <= seed < 2**32", actual=next(s for s in cfg.seeds if not 0 <= s < 2**32))
    if len(set(cfg.seeds)) != len(cfg.seeds):  # one run directory per seed: a repeat would stop at "exists"
        raise ConfigError("a seed is listed twice", source=source, key="seeds",
                          expected="distinct seeds", actual=cfg.seeds)


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
        build_model_config(cls, args, source=f"{source} [model_args]")
    return args

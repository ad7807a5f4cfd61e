"""Hyperparameter search on Optuna: a YAML search space over config keys, one shared study, trials as runs.

A search space maps config keys to a range or a list::

    model_args.mu: {float: [0.05, 0.5]}
    train.lr: {log_float: [1.0e-4, 3.0e-3]}
    model_args.num_heads: {choice: [4, 8]}

(``float``, ``log_float``, ``int``, ``log_int``, ``choice``; keys may also be nested, ``train: {lr: ...}``). Every
bound and choice is checked against the model's and the training loop's config before any trial runs, so an unknown
key or a value out of range is one error naming the space file and the key.

Each trial is one ``fit`` run of the first seed with the trial's settings, in its own run directory
(``<study dir>/trial_<number>/<model>/<dataset>/seed_<seed>``), reporting the validation metric each epoch to the
pruner (median or Hyperband) through Optuna's Lightning callback; its value is the metric's best epoch. The study
lives in a database (SQLite beside the results by default; any URL Optuna's RDB storage accepts, PostgreSQL or
MySQL, for workers on several machines). Workers started with the same command share the study: each stops once
it holds the requested number of finished (complete or pruned) trials. A worker records a heartbeat; the trial of
a worker that stopped beating (killed, machine lost) is marked failed by the next worker that looks, and another
trial takes its place.

Each worker writes, when it stops, the trials table (``trials.csv``, ``trials.md``), Optuna's history and importance
plots (PNG) and the best trial's settings as ``best.yaml``, a config ``mmfusion fit --config`` takes.
"""

from __future__ import annotations

import csv
import io
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from mmfusion.config import load_yaml
from mmfusion.errors import ConfigError, MMFusionError, did_you_mean
from mmfusion.io import atomic_path, atomic_write_json, atomic_write_text, run_lock

KINDS = ("float", "log_float", "int", "log_int", "choice")
SEARCHABLE = ("model_args", "train")
"""Top-level sections a search space may reach into (and ``ablation`` itself)."""
FIXED = {"train.devices", "train.num_nodes", "train.strategy"}
"""Training keys a trial cannot vary: a trial trains in one process (more machines run more workers instead)."""
PRUNERS = ("median", "hyperband", "none")
FINISHED = ("COMPLETE", "PRUNED")


@dataclass(frozen=True)
class Param:
    """One searched config key: its kind and its bounds (``float``, ``int`` and their ``log_`` forms) or choices."""

    key: str
    kind: str
    values: tuple[Any, ...]

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        low, high = self.values
        log = self.kind.startswith("log_")
        if self.kind.endswith("int"):
            return trial.suggest_int(self.key, low, high, log=log)
        return trial.suggest_float(self.key, low, high, log=log)

    def candidates(self) -> tuple[Any, ...]:
        """The values that bound what a trial can draw (both ends of a range, every choice)."""
        return self.values


def minimize(metric: str) -> bool:
    """Losses and errors are minimised, every other validation metric maximised."""
    return metric.endswith(("loss", "mae"))


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        # a section (train: {lr: ...}) holds mappings only; a range or choice ({float: [a, b]}) holds a list
        if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()) \
                and not any(k in KINDS for k in value):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param(key: str, spec: Any, source: str) -> Param:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError("a searched key takes one {kind: values} entry", source=source, key=key,
                          expected=f"e.g. {{float: [low, high]}} or {{choice: [a, b]}} (kinds: {', '.join(KINDS)})",
                          actual=spec)
    kind, values = next(iter(spec.items()))
    if kind not in KINDS:
        raise ConfigError("unknown kind of search range", source=source, key=key, expected=f"one of {KINDS}",
                          actual=kind, hint=did_you_mean(kind, KINDS))
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError("choice takes a non-empty list", source=source, key=key, expected="[a, b, ...]",
                              actual=values)
        if any(v is not None and not isinstance(v, (bool, int, float, str)) for v in values) \
                or len(set(map(repr, values))) != len(values):
            raise ConfigError("choice takes distinct numbers, strings, booleans or null", source=source, key=key,
                              expected="distinct scalars", actual=values)
        return Param(key, kind, tuple(values))
    whole = kind.endswith("int")
    number = (lambda v: isinstance(v, int) and not isinstance(v, bool)) if whole else \
        (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
    if not isinstance(values, list) or len(values) != 2 or not all(number(v) for v in values):
        raise ConfigError(f"{kind} takes [low, high]", source=source, key=key,
                          expected=f"two {'integers' if whole else 'numbers'}", actual=values)
    low, high = values
    if not low < high:
        raise ConfigError("empty range", source=source, key=key, expected="low < high", actual=values)
    if kind.startswith("log_") and low <= 0:
        raise ConfigError(f"a {kind} range must be positive", source=source, key=key, expected="0 < low",
                          actual=values)
    return Param(key, kind, (low, high) if whole else (float(low), float(high)))


def config_with(base: Any, values: Mapping[str, Any], source: str) -> Any:
    """``base`` (a resolved :class:`~mmfusion.engine.config.RunConfig`) with dotted ``values`` applied and the whole
    config checked again (types, bounds, the model's own checks, ablation clashes)."""
    from mmfusion.engine.config import apply_dotted, resolve_config

    raw = base.as_dict()  # a deep copy
    apply_dotted(raw, values)
    try:
        return resolve_config(None, raw, ())
    except ConfigError as err:
        raise err.with_source(source) from None


def load_space(path: str | Path, base: Any, check: Callable[[Any], None] | None = None) -> list[Param]:
    """The search space in ``path``, every bound and choice checked against ``base`` (a resolved run config) and,
    given ``check``, by calling it with each such config (building the model for the data, say)."""
    source = str(path)
    raw = load_yaml(source)
    if not raw:
        raise ConfigError("the search space is empty", source=source, expected="at least one key", actual=raw)
    params = []
    for key, spec in _flatten(raw).items():
        top = key.split(".")[0]
        if key != "ablation" and (top not in SEARCHABLE or "." not in key):
            raise ConfigError("a search space reaches model_args.*, train.* and ablation", source=source, key=key,
                              expected="model_args.KEY, train.KEY or ablation", actual=key,
                              hint=did_you_mean(key, ["ablation", *(f"{s}.{key}" for s in SEARCHABLE)]))
        if key in FIXED:
            raise ConfigError("a trial trains in one process; start more workers to use more devices",
                              source=source, key=key, expected="a key other than " + ", ".join(sorted(FIXED)),
                              actual=key)
        param = _param(key, spec, source)
        for value in param.candidates():
            try:
                cfg = config_with(base, {key: value}, source)
            except ConfigError as err:  # named by the space file and the searched key
                raise ConfigError(f"{err.problem} (at {value!r})", source=source, key=key, expected=err.expected,
                                  actual=err.actual, hint=err.hint) from None
            if check is not None:
                try:
                    check(cfg)
                except Exception as exc:  # noqa: BLE001 - the model refuses the setting (heads not dividing a width)
                    raise ConfigError(f"{base.model} cannot be built with this value ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''})", source=source, key=key,
                                      expected="a value the model accepts", actual=value) from None
        params.append(param)
    return params


# ----------------------------------------------------------------------------------------------------------------
class MetricHistory(L.Callback):
    """The monitored validation metric after every validation epoch."""

    def __init__(self, metric: str) -> None:
        self.metric, self.values = metric, []

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            raise MetricMissing("the run logs no such validation metric", key="--metric",
                              expected="one of " + ", ".join(sorted(k for k in trainer.callback_metrics
                                                                    if k.startswith("val_"))), actual=self.metric)
        self.values.append(float(value))


class MetricMissing(ConfigError):
    """``--metric`` names no metric the run logs: every trial would fail the same way."""


class _Surplus(Exception):
    """A trial started while the study already held enough finished and running trials (workers raced)."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def open_study(storage: str, name: str, *, direction: str, pruner: str, max_epochs: int, heartbeat: float,
               sampler_seed: int | None = None) -> Any:
    """Create or join the study ``name`` in ``storage`` (an RDB URL)."""
    import optuna
    import sqlalchemy.exc

    kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):  # several local workers write one file: wait for its lock
        kwargs = {"connect_args": {"timeout": 120}}
    for attempt in range(10):  # two workers creating the tables at the same moment: one of them retries
        try:
            rdb = optuna.storages.RDBStorage(storage, engine_kwargs=kwargs, heartbeat_interval=max(1, int(heartbeat)),
                                             grace_period=max(2, int(2 * heartbeat)))
            break
        except sqlalchemy.exc.OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.5 + attempt)
        except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as exc:
            raise ConfigError(f"Optuna cannot open this storage ({type(exc).__name__}: {exc})", key="--storage",
                              expected="sqlite:///FILE, postgresql://..., mysql://... (with its driver installed)",
                              actual=storage) from None
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs),
               "none": optuna.pruners.NopPruner}
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    return optuna.create_study(storage=rdb, study_name=name, direction=direction, sampler=sampler,
                               pruner=pruners[pruner](), load_if_exists=True)


def _count(study: Any) -> tuple[int, int]:
    """(finished, running) trials of the study, surplus ones left out."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    finished = sum(t.state != TrialState.RUNNING for t in trials)
    return finished, len(trials) - finished


def tune(base: Any, space_path: str | Path, trials: int, *, storage: str | None = None, study_name: str | None = None,
         metric: str = "val_loss", pruner: str = "median", heartbeat: float = 30.0, sampler_seed: int | None = None,
         poll: float = 2.0, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Work on the study until it holds ``trials`` finished trials; write the report; return its summary."""
    optuna = _optuna()
    from mmfusion.data import load_data
    from mmfusion.engine.loaders import check_model_reads, require_training_splits
    from mmfusion.models import build

    if base.train.devices * base.train.num_nodes > 1:
        raise ConfigError("a trial trains in one process; start the same tune command on more machines (or "
                          "several times on one) to run trials side by side", key="devices",
                          expected="--devices 1 --num-nodes 1", actual=base.train.devices * base.train.num_nodes)
    if pruner not in PRUNERS:
        raise ConfigError("unknown pruner", key="--pruner", expected=f"one of {PRUNERS}", actual=pruner)
    bundle = load_data(base.data, base.data_args, source="data_args")
    require_training_splits(bundle)
    check_model_reads(base.model, bundle)
    params = load_space(space_path, base, lambda cfg: build(cfg.model, bundle.feature_dims, bundle.output_dim,
                                                            **cfg.model_args))
    name = study_name or f"{base.model}{'-' + base.ablation if base.ablation else ''}-{bundle.name}"
    study_dir = Path(base.out) / "tune" / name
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or sqlite_url(study_dir / "study.db")
    direction = "minimize" if minimize(metric) else "maximize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, plots
    study = open_study(url, name, direction=direction, pruner=pruner, max_epochs=base.train.max_epochs,
                       heartbeat=heartbeat, sampler_seed=sampler_seed)
    _same_study(study, base, params, metric, url)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    errors: list[MMFusionError] = []
    objective = _objective(study, base, bundle, params, trials, metric, study_dir, worker, errors)
    _work(study, objective, _reporter(metric, say), trials, worker, errors, poll, say)
    with run_lock(study_dir, what="tuning study's folder", wait=True):  # workers ending together write in turn
        return write_report(study, study_dir, metric, trials, say)


def _optuna() -> Any:
    """The optuna module, once its integration with Lightning is known to be installed."""
    try:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback  # noqa: F401  (used by each trial)
    except ImportError as exc:
        raise ConfigError(f"mmfusion tune needs Optuna ({exc})", key="tune",
                          expected="pip install 'mmfusion[tune]'", actual="not installed") from None
    return optuna


def _objective(study: Any, base: Any, bundle: Any, params: Sequence[Param], trials: int, metric: str,
               study_dir: Path, worker: str, errors: list[MMFusionError]) -> Callable[[Any], float]:
    """A trial: train the first seed with the trial's setting and return the best validation ``metric``."""
    from optuna import TrialPruned
    from optuna.trial import TrialState
    from optuna_integration import PyTorchLightningPruningCallback

    from mmfusion.engine.rundir import run_dir_for
    from mmfusion.engine.train import fit_one

    seed = base.seeds[0]
    direction = "minimize" if minimize(metric) else "maximize"

    def objective(trial: Any) -> float:
        ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                       TrialState.RUNNING)) if t.number < trial.number]
        if len(ahead) >= trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus
        values = {p.key: p.suggest(trial) for p in params}
        cfg = replace(config_with(base, values, f"trial {trial.number}"), seeds=[seed],
                      out=str(study_dir / f"trial_{trial.number:04d}"))
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("config", yaml.safe_load(yaml.safe_dump(best_config(cfg.as_dict()))))
        history = MetricHistory(metric)
        trial.set_user_attr("run_dir", str(run_dir_for(cfg, bundle, seed)))
        try:
            result = fit_one(cfg, bundle, seed, callbacks=[history, PyTorchLightningPruningCallback(trial, metric)],
                             stops=(TrialPruned,))  # a pruned trial keeps its logs
        except MMFusionError as exc:  # the trial fails (Optuna records it); the worker decides whether to go on
            errors.append(exc)
            raise
        trial.set_user_attr("epochs", len(history.values))
        trial.set_user_attr("test", {k: result[k] for k in result if isinstance(result[k], float)
                                     and not k.endswith(("seconds", "_per_epoch", "_per_sample"))})
        if not history.values:
            raise ConfigError("no validation epoch ran", key="train.max_epochs", expected=">= 1", actual=0)
        return min(history.values) if direction == "minimize" else max(history.values)

    return objective


def _reporter(metric: str, say: Callable[[str], None]) -> Callable[[Any, Any], None]:
    """The study callback that says one line per finished trial (not of a surplus one)."""
    from optuna.trial import TrialState

    def said(study: Any, trial: Any) -> None:
        if trial.user_attrs.get("surplus"):
            return
        setting = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        if trial.state == TrialState.COMPLETE:
            say(f"trial {trial.number}: {metric} {trial.value:.4f} ({setting})")
        elif trial.state == TrialState.PRUNED:
            say(f"trial {trial.number}: pruned after {trial.user_attrs.get('epochs', len(trial.intermediate_values))}"
                f" epoch(s) ({setting})")
        else:
            say(f"trial {trial.number}: failed ({setting})")

    return said


def _work(study: Any, objective: Callable[[Any], float], said: Callable[[Any, Any], None], trials: int, worker: str,
          errors: list[MMFusionError], poll: float, say: Callable[[str], None]) -> None:
    """Run trials one at a time until the study holds ``trials`` finished ones (waiting for those running on other
    workers); three failures in a row stop the worker, naming the last."""
    import optuna
    from optuna.trial import TrialState

    failures, waiting = 0, False
    while True:
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, and its place freed
        finished, running = _count(study)
        if finished >= trials:
            return
        if finished + running >= trials:  # the last trials run elsewhere; one of them may yet fail
            if not waiting:
                say(f"{finished} of {trials} trials finished; waiting for the {running} running on other workers")
                waiting = True
            time.sleep(poll)
            continue
        waiting = False
        before = len(study.get_trials(deepcopy=False))
        study.optimize(objective, n_trials=1, catch=(_Surplus, MMFusionError), callbacks=[said], gc_after_trial=True)
        if errors and isinstance(errors[-1], MetricMissing):
            raise errors[-1]
        mine = [t for t in study.get_trials(deepcopy=False)[before:] if t.user_attrs.get("worker") == worker]
        if mine and mine[-1].state == TrialState.FAIL:
            failures += 1
            if failures >= 3:  # every setting fails the same way: say why instead of trying on
                raise MMFusionError(f"three trials in a row failed; the last: {errors[-1] if errors else '?'}")
        elif mine:
            failures = 0


def _same_study(study: Any, base: Any, params: Sequence[Param], metric: str, url: str) -> None:
    """A worker joining a study must search the same space for the same metric from the same settings."""
    from mmfusion.engine.rundir import PRESENTATION_ONLY, flat_settings

    setting = {k: v for k, v in flat_settings(yaml.safe_load(yaml.safe_dump(base.as_dict()))).items()
               if k not in PRESENTATION_ONLY}
    mine = {"metric": metric, "space": [[p.key, p.kind, list(p.values)] for p in params], "settings": setting}
    stored = study.user_attrs.get("setup")
    if stored is None:
        study.set_user_attr("setup", mine)
        return
    for part in ("metric", "space", "settings"):
        if stored[part] != mine[part]:
            if part == "settings":
                key = next(k for k in sorted(set(stored[part]) | set(mine[part]))
                           if stored[part].get(k) != mine[part].get(k))
                expected, actual = stored[part].get(key), mine[part].get(key)
            else:
                key, expected, actual = part, stored[part], mine[part]
            raise ConfigError(f"the study {study.study_name!r} was started with another {part}; give the same "
                              "command as its other workers, or another --study", source=url, key=key,
                              expected=expected, actual=actual)


def best_config(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """A run's resolved config as a file ``fit --config`` reads: its settings, without where it was written."""
    train = {k: v for k, v in resolved.get("train", {}).items() if k != "progress"}
    return {k: v for k, v in resolved.items() if k not in ("out", "dataset")} | {"train": train}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(study: Any, study_dir: Path, metric: str, trials: int, say: Callable[[str], None]) -> dict[str, Any]:
    """``trials.{csv,md}``, ``history.png``, ``importance.png``, ``best.yaml`` and ``best.json`` in ``study_dir``."""
    from optuna.trial import TrialState

    rows = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    keys = sorted({k for t in rows for k in t.params})
    header = ["trial", "state", metric, "epochs", *keys, "seconds", "worker", "run_dir"]
    table = []
    for t in rows:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        table.append([t.number, t.state.name.lower(), t.value, t.user_attrs.get("epochs", len(t.intermediate_values)),
                      *[t.params.get(k) for k in keys], seconds, t.user_attrs.get("worker", ""),
                      t.user_attrs.get("run_dir", "")])
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *[["" if v is None else v for v in r] for r in table]])
    atomic_write_text(study_dir / "trials.csv", buf.getvalue())
    complete = [t for t in rows if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    md = [f"# Study {study.study_name}: {metric} ({study.direction.name.lower()})", "",
          f"{sum(t.state.name in FINISHED for t in rows)} of {trials} trials finished"
          + (f"; best: trial {best.number}, {metric} {best.value:.4f}." if best else "; none completed."), "",
          "| " + " | ".join(header[:-2]) + " |", "|" + "---|" * (len(header) - 2)]
    for r in table:
        md.append("| " + " | ".join("–" if v is None else _short(v) for v in r[:-2]) + " |")
    atomic_write_text(study_dir / "trials.md", "\n".join(md) + "\n")
    files = [study_dir / "trials.csv", study_dir / "trials.md"]
    files += _plots(study, study_dir, say)
    summary: dict[str, Any] = {"study": study.study_name, "metric": metric, "direction": study.direction.name.lower(),
                               "trials": len(rows), "finished": sum(t.state.name in FINISHED for t in rows),
                               "best": None, "files": [str(f) for f in files]}
    if best is not None:
        atomic_write_text(study_dir / "best.yaml",
                          f"# study {study.study_name}, trial {best.number}: {metric} {best.value:.6g}\n"
                          + yaml.safe_dump(best.user_attrs["config"], sort_keys=False))
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params,
                           "run_dir": best.user_attrs.get("run_dir"), "config": str(study_dir / "best.yaml"),
                           "test": best.user_attrs.get("test", {})}
        summary["files"].append(str(study_dir / "best.yaml"))
    atomic_write_json(study_dir / "best.json", summary)
    return summary


def _plots(study: Any, study_dir: Path, say: Callable[[str], None]) -> list[Path]:
    """Optuna's optimisation history and parameter importances, drawn with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.trial import TrialState

    out: list[Path] = []
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return out  # nothing to plot yet
    for name, draw in (("history", vis.plot_optimization_history), ("importance", vis.plot_param_importances)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as exc:  # importances need two completed trials that differ
                say(f"no {name} plot yet: {exc}")
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
        with atomic_path(study_dir / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        out.append(study_dir / f"{name}.png")
    return out

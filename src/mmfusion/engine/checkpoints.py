"""Loading trained systems back from checkpoints, safely (``weights_only=True``)."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from mmfusion.config import yaml_load
from mmfusion.data import DatasetBundle, data_kind, effective_reader_options
from mmfusion.errors import ConfigError, DataError
from mmfusion.models.registry import non_finite_tensors

if TYPE_CHECKING:  # the LightningModule: imported where a system is built (importing Lightning takes seconds)
    from torch import nn

    from mmfusion.engine.system import FusionSystem

def __getattr__(name: str) -> Any:
    """``FusionSystem`` is imported on first use (``checkpoints.FusionSystem`` still names it)."""
    if name == "FusionSystem":
        from mmfusion.engine.system import FusionSystem

        return FusionSystem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _system_class() -> Any:
    import sys

    return sys.modules[__name__].FusionSystem


SYSTEM_FIELDS = ("model_name", "model_args", "feature_dims", "output_dim", "task", "emotions", "train", "meta")
"""The hyper-parameters a checkpoint holds: :class:`~mmfusion.engine.system.FusionSystem`'s arguments."""


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's contents (``hyper_parameters``, ``state_dict``, ...), read with
    ``torch.load(weights_only=True)``: tensors and plain data only, nothing in it is run. ``mmap=True`` maps the
    tensors instead of reading them, for callers that only need the hyper-parameters."""
    path = Path(path)
    if not path.exists():
        raise DataError("checkpoint not found", file=path)
    try:
        # memory-mapping needs torch.save's zip format; older (legacy) files are read whole
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as exc:
        raise DataError(f"not a loadable mmfusion checkpoint ({_load_failure(exc)})", file=path) from None
    if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise DataError("not an mmfusion checkpoint", file=path, expected="hyper_parameters and state_dict",
                        actual=sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__)
    return ckpt


def read_hparams(path: str | Path) -> dict[str, Any]:
    """The hyper-parameters a checkpoint was trained with (model, task, reader options), without building the model
    or reading its weights."""
    return dict(read_checkpoint(path, mmap=True)["hyper_parameters"])


def run_dir(ckpt: str | Path) -> Path:
    """The run directory a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/<name>.ckpt`` (where ``fit``
    writes them), else the folder the file lies in. Evaluation results are written there by default."""
    path = Path(ckpt).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def load_system(path: str | Path) -> FusionSystem:
    """Rebuild the model from the hyper-parameters stored in the checkpoint and load its weights (read as
    :func:`read_checkpoint` reads them). Hyper-parameters this version cannot build a model from, weights that do
    not fit that model and non-finite weights are each a :class:`DataError` naming the file."""
    ckpt = read_checkpoint(path)
    hparams = _checked_hparams(ckpt, path)
    system = _built(path, lambda: _system_class()(**dict(hparams)))
    _load_weights(system, ckpt["state_dict"], hparams, path)
    system.eval()
    return system


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The checkpoint's model alone, in eval mode, and its hyper-parameters: what :func:`load_system` gives as
    ``system.model`` and ``system.hparams``, read and checked the same way, without building the LightningModule
    (nor importing Lightning, which takes seconds: ``mmfusion predict`` on a video file uses this)."""
    from mmfusion.models import build

    ckpt = read_checkpoint(path)
    hparams = _checked_hparams(ckpt, path)
    unknown = [k for k in hparams if k not in SYSTEM_FIELDS]
    if unknown:
        raise DataError("its hyper-parameters are not an mmfusion model's", file=path,
                        key=f"hyper_parameters/{unknown[0]}", expected=", ".join(SYSTEM_FIELDS), actual=unknown)
    model = _built(path, lambda: build(hparams["model_name"], dict(hparams["feature_dims"]),
                                       int(hparams["output_dim"]), **dict(hparams.get("model_args") or {})))
    state = ckpt["state_dict"]
    if not isinstance(state, Mapping):
        raise DataError("not an mmfusion checkpoint", file=path, key="state_dict", expected="a mapping",
                        actual=type(state).__name__)
    outside = [k for k in state if not (isinstance(k, str) and k.startswith("model."))]
    if outside:  # the system holds nothing but its model: such a file would not load into it either
        raise DataError("its weights do not fit the model its hyper-parameters describe", file=path,
                        key="state_dict", expected=f"{hparams.get('model_name')}'s parameters",
                        actual=f"unexpected key {outside[0]!r}")
    _load_weights(model, state, hparams, path, prefix="model.")
    return model.eval(), dict(hparams)


def _built(path: str | Path, make: Any) -> Any:
    """``make()``, with the errors of building from a checkpoint's hyper-parameters as one :class:`DataError`
    naming the file."""
    try:
        return make()
    except ConfigError as exc:
        raise DataError(f"its hyper-parameters do not describe a model this version builds ({exc})",
                        file=path, key="hyper_parameters") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"its hyper-parameters are not an mmfusion model's ({type(exc).__name__}: {exc})",
                        file=path, key="hyper_parameters") from None


def _checked_hparams(ckpt: Mapping[str, Any], path: str | Path) -> Mapping[str, Any]:
    hparams = ckpt["hyper_parameters"]
    if not isinstance(hparams, Mapping):
        raise DataError("not an mmfusion checkpoint", file=path, key="hyper_parameters", expected="a mapping",
                        actual=type(hparams).__name__)
    hparams = _runnable_here(hparams, path)
    check_hparams(hparams, path)
    return hparams


def _runnable_here(hparams: Any, path: str | Path) -> Any:
    """The hyper-parameters with ``model_args.attention=kernel`` read as ``auto`` where the compiled kernel is not
    available (another machine, or ``MMFUSION_KERNELS=0``): how attention runs does not change what a trained model
    computes (the paths agree within float tolerance, tests/kernels/test_kernels.py), so a checkpoint stays usable
    for evaluation everywhere. A warning names the change; training settings are compared from the run's records."""
    args = hparams.get("model_args")
    if not (isinstance(args, Mapping) and args.get("attention") == "kernel"):
        return hparams
    from mmfusion import kernels

    if kernels.narrow_attention() is not None:
        return hparams
    import warnings

    warnings.warn(f"{path}: trained with model_args.attention=kernel, which is unavailable here "
                  f"({kernels.unavailable_reason()}); evaluating with attention=auto", stacklevel=3)
    return {**hparams, "model_args": {**args, "attention": "auto"}}


def _load_weights(module: nn.Module, state: Any, hparams: Mapping[str, Any], path: str | Path,
                  prefix: str = "") -> None:
    """``module.load_state_dict(state)`` (strict; keys without their ``prefix``), its failure and non-finite
    weights as a :class:`DataError` naming the key as the file has it."""
    try:
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items()} if prefix else state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
        raise DataError("its weights do not fit the model its hyper-parameters describe", file=path,
                        key="state_dict", expected=f"{hparams.get('model_name')}'s parameters",
                        actual=detail[0][:300]) from None
    bad = non_finite_tensors(state)
    if bad:
        raise DataError("non-finite weights (NaN or inf)", file=path, key=f"state_dict/{bad[0]}",
                        expected="finite values", actual=f"{len(bad)} tensor(s) with NaN or inf, first {bad[0]}")


def check_hparams(hparams: Mapping[str, Any], path: str | Path) -> None:
    """Check a checkpoint's hyper-parameters before anything is built from them: the fields a model is built from,
    of the right types, and sizes whose model fits in this machine's memory (see
    :func:`mmfusion.engine.model_plan.plan_model`, which builds it on the meta device). A :class:`DataError` naming
    the file otherwise."""
    from mmfusion.engine.model_plan import KNOWN_TASKS, plan_model

    name, args = hparams.get("model_name"), hparams.get("model_args", {})
    if not isinstance(name, str):
        raise DataError("not an mmfusion checkpoint", file=path, key="hyper_parameters/model_name",
                        expected="a model name", actual=type(name).__name__)
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise DataError("not an mmfusion checkpoint", file=path, key="hyper_parameters/model_args",
                        expected="a mapping of argument names", actual=type(args).__name__)
    if hparams.get("task") not in KNOWN_TASKS:
        raise DataError("not an mmfusion checkpoint", file=path, key="hyper_parameters/task",
                        expected=f"one of {KNOWN_TASKS}", actual=hparams.get("task"))
    try:
        plan_model(name, args, hparams.get("feature_dims"), hparams.get("output_dim"), source=str(path),
                   training=False)
    except ConfigError as exc:
        raise DataError(f"its hyper-parameters do not describe a model this version builds ({exc.problem})",
                        file=path, key=f"hyper_parameters/{exc.key}" if exc.key else "hyper_parameters",
                        expected=exc.expected, actual=exc.actual) from None


# torch's hint, on refusing a pickle, to load it unrestricted or allow-list what it holds: advice that would run
# the file's code, never passed on
_UNSAFE_ADVICE = re.compile(r"weights_only|safe_globals|add_safe_globals|allowlist|trust", re.IGNORECASE)


def _load_failure(exc: Exception) -> str:
    """The reason ``torch.load(weights_only=True)`` gave, without its advice to load the file unrestricted."""
    if isinstance(exc, pickle.UnpicklingError):
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        found = re.findall(r"Unsupported global: GLOBAL [\w.]+|Unsupported operand \w+|[\w ]+ is not supported",
                           text)
        if not found:
            sentences = re.split(r"(?<=[.!?])\s+", text)
            advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
            found = [x for x in sentences if x and not x.startswith(advice)]
        found = [x for x in found if not _UNSAFE_ADVICE.search(x)]
        return ("not tensors and plain data, the only things a checkpoint is read as; nothing in it was run: "
                + ("; ".join(dict.fromkeys(found))[:300] or "unreadable pickle"))
    reason = str(exc)
    if _UNSAFE_ADVICE.search(reason):
        reason = "unreadable"
    return f"{type(exc).__name__}: {reason[:200]}"


def check_compatible(system: FusionSystem, bundle: DatasetBundle, ckpt: str | Path) -> None:
    """The data must have the feature set (``mmfusion extract``'s, where either records one), the feature sizes
    and the task the checkpoint was trained on."""
    trained = (system.hparams.get("meta") or {}).get("feature_set")
    if (trained or bundle.feature_set) and trained != bundle.feature_set:
        raise DataError("extracted with another feature set than the checkpoint was trained on", file=bundle.source,
                        key="feature_set", expected=f"{trained or 'none recorded'} (from {ckpt})",
                        actual=bundle.feature_set or "none recorded")
    want = dict(system.hparams["feature_dims"])
    from mmfusion.models import model_inputs

    if model_inputs(system.hparams["model_name"]) == "clips":
        # clip networks pool their maps whole: any frame size and count fits, the modalities must be the same
        want = {m: bundle.feature_dims.get(m, d) for m, d in want.items()}
    if want != bundle.feature_dims:
        raise DataError("feature sizes differ from the checkpoint's", file=bundle.source, key="feature_dims",
                        expected=f"{want} (from {ckpt})", actual=bundle.feature_dims)
    if system.hparams["task"] != bundle.task:
        raise DataError("task differs from the checkpoint's", file=bundle.source, key="task",
                        expected=system.hparams["task"], actual=bundle.task)


def training_data(hparams: Mapping[str, Any], ckpt: str | Path) -> tuple[str | None, dict[str, Any]]:
    """The data SPEC and reader options (``data_args``) checkpoint ``ckpt`` with hyper-parameters ``hparams``
    (``system.hparams`` or :func:`read_hparams`) was trained with.

    Read from the checkpoint's metadata; for checkpoints written before it recorded them, from the ``config.yaml``
    of the run directory the checkpoint sits in (``<run>/checkpoints/<name>.ckpt``). ``(None, {})`` if neither says.
    """
    meta = dict(hparams.get("meta") or {})
    if "data_args" in meta:
        return meta.get("data_spec"), dict(meta["data_args"] or {})
    config = run_dir(ckpt) / "config.yaml"
    try:
        raw = yaml_load(config.read_text())
    except (OSError, yaml.YAMLError):
        return None, {}
    if not isinstance(raw, dict) or not isinstance(raw.get("data_args") or {}, dict):
        return None, {}
    return raw.get("data"), dict(raw.get("data_args") or {})


def reader_options(hparams: Mapping[str, Any], ckpt: str | Path, spec: str,
                   overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reader options to evaluate the checkpoint on ``spec`` with: those it was trained with, then ``overrides``.

    The training options are kept only when ``spec`` goes to the same reader as the training data (a checkpoint
    trained on a RAVDESS fold is tested on that fold's test split, one trained on a larger synthetic draw on that
    draw's test split). Returns ``(options, inherited)``: everything to pass to ``load_data`` and the part of it that
    came from the training run.
    """
    train_spec, train_args = training_data(hparams, ckpt)
    inherited: dict[str, Any] = {}
    if _same_reader(train_spec, spec):
        inherited = {k: v for k, v in train_args.items() if k not in (overrides or {})}
    return inherited | dict(overrides or {}), inherited


def _same_reader(train_spec: str | None, spec: str) -> bool:
    """Whether ``spec`` goes to the reader the (recorded) training SPEC went to."""
    try:
        return bool(train_spec) and data_kind(train_spec) == data_kind(spec)
    except DataError:
        return False


# Options that only size the splits a model is evaluated on: the built-in benchmark draws every clip independently
# from one distribution, so a larger (or another) validation or test draw holds no training clip.
EVALUATION_SIZES: dict[str, tuple[str, ...]] = {"synthetic": ("n_valid", "n_test")}


def check_same_reader_options(hparams: Mapping[str, Any], ckpt: str | Path, spec: str,
                              data_args: Mapping[str, Any] | None) -> None:
    """Raise if ``spec`` with ``data_args`` reads other data than the checkpoint was trained on with its options.

    Options are compared with the reader's defaults filled in, except the sizes of the evaluation splits
    (:data:`EVALUATION_SIZES`); a checkpoint that does not record its training data, or was trained on data of
    another reader, is not checked.
    """
    train_spec, train_args = training_data(hparams, ckpt)
    if not _same_reader(train_spec, spec):
        return
    try:
        trained = effective_reader_options(train_spec, train_args)
    except (DataError, ConfigError):
        return
    given = effective_reader_options(spec, data_args)
    free = EVALUATION_SIZES.get(data_kind(spec), ())
    differ = [k for k in sorted(set(trained) | set(given)) if k not in free and trained.get(k) != given.get(k)]
    if differ:
        hint = " ".join(f"--set {k}={trained.get(k)}" for k in differ)
        raise DataError(f"reader options differ from the checkpoint's training run (pass {hint} to read the data "
                        "it was trained on)", file=ckpt, key=differ[0], expected=trained.get(differ[0]),
                        actual=given.get(differ[0]))


REFERENCE_CLASSES = {"msaf_ravdess": "ravdess", "resnext50": "ravdess", "mfccnet": "ravdess", "msaf_ntu": "ntu",
                     "i3d": "ntu", "hcn": "ntu"}


def import_reference(name: str, path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the MSAF authors' file ``path`` for network ``name`` as an mmfusion checkpoint ``out`` (atomically),
    which ``test``, ``predict`` and ``fit --pretrained model=OUT`` read. Returns a summary (tensors, parameters,
    the fold the file name gives for RAVDESS' ``fold_K_`` files)."""
    import re

    from mmfusion.data.clips import RAVDESS_EMOTIONS
    from mmfusion.io import atomic_write_bytes
    from mmfusion.models.reference import translate

    imported = translate(name, path)
    kind = REFERENCE_CLASSES.get(name)
    classes: tuple[str, ...] = ()
    if kind == "ravdess" and imported.output_dim == len(RAVDESS_EMOTIONS):
        classes = RAVDESS_EMOTIONS
    elif kind == "ntu":
        classes = tuple(f"A{i + 1:03d}" for i in range(imported.output_dim))
    fold = re.match(r"fold_(\d+)_", Path(path).name)
    meta: dict[str, Any] = {"imported_from": str(path), "reference": name}
    if fold and kind == "ravdess":
        meta |= {"data_spec": "ravdess:", "data_args": {"fold": int(fold.group(1)) - 1}}
    system = _system_class()(name, imported.model_args, imported.feature_dims, imported.output_dim, imported.task,
                          classes, {}, meta=meta)
    system.model.load_state_dict(imported.state, strict=True)
    import io

    buf = io.BytesIO()
    torch.save({"hyper_parameters": dict(system.hparams), "state_dict": system.state_dict(),
                "epoch": 0, "global_step": 0}, buf)
    atomic_write_bytes(Path(out), buf.getvalue())
    return {"checkpoint": str(out), "network": name, "tensors": len(imported.state),
            "parameters": sum(p.numel() for p in system.model.parameters()), "meta": meta}


def check_whole_model(path: str | Path, model: str, model_args: Mapping[str, Any]) -> list[str]:
    """A checkpoint that initialises a whole run (``--resume CKPT``, ``--pretrained model=CKPT``) must hold the run's
    network: another one is a :class:`ConfigError` naming both. Returns the model arguments the checkpoint was made
    with that differ from the run's (``"key: checkpoint -> run"``; the run's apply, its tensors are checked one by
    one when they load). A file that is not an mmfusion checkpoint (a bare state dict) is checked by its tensors
    only: []."""
    try:
        hparams = read_hparams(path)
    except DataError:
        return []
    theirs = hparams.get("model_name")
    if theirs != model:
        raise ConfigError("the checkpoint holds another network than the run trains", source=str(path),
                          key="model", expected=model, actual=theirs,
                          hint=f"train --model {theirs} from it, or give a checkpoint of {model}")

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    saved = dict(hparams.get("model_args") or {})
    return [f"{k}: {saved[k]!r} -> {model_args[k]!r}" for k in sorted(saved)
            if k in model_args and plain(saved[k]) != plain(model_args[k])]

"""What a model will be before it is built: its full resolved config and its parameter count, checked.

The model is built on PyTorch's ``meta`` device (shapes only, no memory), so hyper-parameters from a config file or
a checkpoint that describe an impossible model (a negative width, 10^13 input features, a hidden size of 10^10)
are refused with a :class:`ConfigError` before any weight is allocated or any run directory made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import torch

from mmfusion.errors import ConfigError, MMFusionError, shorten
from mmfusion.models import build

TRAINING_COPIES = 4
"""Copies of every parameter training holds: the weights, their gradients and Adam's two moment estimates."""

KNOWN_TASKS = ("regression", "classification", "emotion")


def plain(value: Any) -> Any:
    """``value`` with tuples as lists, recursively (as YAML and JSON store it and the model configs read it)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def memory_bytes() -> int | None:
    """Physical memory of this machine in bytes (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_sizes(feature_dims: Any, output_dim: Any, *, source: str) -> None:
    """Feature sizes are a mapping of modality name to a positive int, the output size a positive int."""
    if not isinstance(feature_dims, Mapping) or not feature_dims:
        raise ConfigError("feature sizes must be a mapping of modality to size", source=source, key="feature_dims",
                          expected="e.g. {'text': 300, 'audio': 5}", actual=feature_dims)
    for name, dim in feature_dims.items():
        if not isinstance(name, str) or isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ConfigError("a feature size must be a positive int", source=source, key=f"feature_dims.{name}",
                              expected="an int >= 1", actual=dim)
    if isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1:
        raise ConfigError("the output size must be a positive int", source=source, key="output_dim",
                          expected="an int >= 1", actual=output_dim)


def plan_model(model_name: str, model_args: Mapping[str, Any], feature_dims: Mapping[str, int], output_dim: int,
               *, source: str, training: bool = True) -> tuple[dict[str, Any], int]:
    """Build ``model_name`` on the meta device; return its full resolved config (every field of its config
    dataclass, defaults included, so that a later change of a default cannot change what it rebuilds) and its
    parameter count.

    Raises :class:`ConfigError` naming ``source`` for sizes that are not positive ints, arguments the model cannot
    be built from, and a model whose parameters (times :data:`TRAINING_COPIES` with ``training``) would not fit in
    this machine's memory.
    """
    check_sizes(feature_dims, output_dim, source=source)
    try:
        with torch.device("meta"):
            model = build(model_name, dict(feature_dims), int(output_dim), **dict(model_args))
    except MMFusionError:
        raise
    except Exception as exc:  # noqa: BLE001 - sizes torch cannot even describe (overflow, negative dimensions)
        reason = f"{type(exc).__name__}: {shorten(str(exc), 200)}"
        if "overflow" in str(exc).lower():
            raise ConfigError(f"{model_name} would have more parameters than any machine's memory holds ({reason})",
                              source=source, key="model_args", expected="smaller sizes",
                              actual={"feature_dims": dict(feature_dims), **dict(model_args)}) from None
        raise ConfigError(f"{model_name} cannot be built with these sizes ({reason})", source=source,
                          key="model_args", expected="sizes the model accepts", actual=dict(model_args)) from None
    n_params = sum(p.numel() for p in model.parameters())
    itemsize = max((p.element_size() for p in model.parameters()), default=4)
    need = n_params * itemsize * (TRAINING_COPIES if training else 1)
    have = memory_bytes()
    if have is not None and need > have:
        what = "train" if training else "hold"
        raise ConfigError(f"{model_name} would have {n_params:,} parameters; to {what} it needs about "
                          f"{need / 2**30:,.1f} GiB of memory, this machine has {have / 2**30:,.1f} GiB",
                          source=source, key="model_args", expected="smaller sizes",
                          actual={"feature_dims": dict(feature_dims), **dict(model_args)})
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        full = plain(dataclasses.asdict(config))
    else:
        full = plain(dict(model_args))
    return full, n_params

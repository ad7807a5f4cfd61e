"""Model registry: builders decorated with :func:`register_model`, named after the function (timm style).

``build(name, feature_dims, output_dim, **overrides)`` returns an ``nn.Module`` whose forward takes
``(features, masks)`` — name-keyed dicts of (B, T_m, d_m) floats and (B, T_m) bools — and returns a dict with at
least ``"pred"`` (B, output_dim); optionally ``"losses"`` (named auxiliary losses, already weighted),
``"monitor"`` (named detached scalars the training loop logs but does not optimise) and ``"inspect"`` (tensors for
plots).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from mmfusion.errors import ConfigError, did_you_mean

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}
_CONFIGS: dict[str, type] = {}
_INPUTS: dict[str, str] = {}


def register_model(config_class: type | None = None, inputs: str = "sequences") -> Callable[[Builder], Builder]:
    """Register a builder under its function name; ``config_class`` is the dataclass its overrides update;
    ``inputs`` is "sequences" (text/vision/audio feature sequences with masks) or "clips" (raw video/audio)."""

    def wrap(fn: Builder) -> Builder:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} registered twice")
        _REGISTRY[fn.__name__] = fn
        _INPUTS[fn.__name__] = inputs
        if config_class is not None:
            _CONFIGS[fn.__name__] = config_class
        return fn

    return wrap


def _ensure_loaded() -> None:
    import mmfusion.models  # noqa: F401  (imports every model family, which registers its builders)


def list_models(inputs: str | None = None) -> list[str]:
    """Names of all registered models, sorted; ``inputs`` keeps only "sequences" or "clips" models."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if inputs is None or _INPUTS[n] == inputs)


def model_inputs(name: str) -> str:
    """What model ``name`` reads: "sequences" (feature sequences with masks) or "clips" (raw video/audio)."""
    _ensure_loaded()
    return _INPUTS[name]


def config_class(name: str) -> type | None:
    _ensure_loaded()
    return _CONFIGS.get(name)


def build(name: str, feature_dims: Mapping[str, int], output_dim: int, **overrides: Any) -> nn.Module:
    """Build model ``name`` for the given feature sizes and output size; ``overrides`` update its config."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ConfigError("unknown model", key="model", expected=f"one of {sorted(_REGISTRY)}", actual=name,
                          hint=did_you_mean(name, sorted(_REGISTRY)))
    return _REGISTRY[name](dict(feature_dims), int(output_dim), **overrides)


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf (weights no model should load)."""
    import torch

    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
            and not bool(torch.isfinite(v).all())]

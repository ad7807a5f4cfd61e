"""Loading trained systems back from checkpoints, safely (``weights_only=True``)."""

from __future__ import annotations

from pathlib import Path

import torch

from mmfusion.data import DatasetBundle
from mmfusion.engine.system import FusionSystem
from mmfusion.errors import DataError


def load_system(path: str | Path) -> FusionSystem:
    """Rebuild the model from the hyper-parameters stored in the checkpoint and load its weights.

    The checkpoint is read with ``torch.load(weights_only=True)``: it can hold tensors and plain data only.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("checkpoint not found", file=path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"not a loadable mmfusion checkpoint ({type(exc).__name__}: {str(exc)[:200]})",
                        file=path) from None
    if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise DataError("not an mmfusion checkpoint", file=path, expected="hyper_parameters and state_dict",
                        actual=sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__)
    hp = dict(ckpt["hyper_parameters"])
    system = FusionSystem(**hp)
    system.load_state_dict(ckpt["state_dict"])
    system.eval()
    return system


def check_compatible(system: FusionSystem, bundle: DatasetBundle, ckpt: str | Path) -> None:
    """The data must have the feature sizes and task the checkpoint was trained on."""
    want = dict(system.hparams["feature_dims"])
    if want != bundle.feature_dims:
        raise DataError("feature sizes differ from the checkpoint's", file=bundle.source, key="feature_dims",
                        expected=f"{want} (from {ckpt})", actual=bundle.feature_dims)
    if system.hparams["task"] != bundle.task:
        raise DataError("task differs from the checkpoint's", file=bundle.source, key="task",
                        expected=system.hparams["task"], actual=bundle.task)

"""What makes an interrupted run continue as if it had never stopped, and refuse to continue as another run.

- :class:`EpochSampler`: the training split's shuffle order of epoch ``e`` depends only on the seed and ``e``, so a
  run resumed at epoch ``e`` sees the batches the uninterrupted run would have seen;
- :class:`RandomStates`: the random number generators (torch's, CUDA's, NumPy's, Python's; dropout draws from
  torch's) are saved in every checkpoint and restored from it;
- :class:`AtomicCheckpointIO`: checkpoints are written beside their destination, flushed and renamed into place
  (:mod:`mmfusion.io`), so a crash or a full disk never leaves a half-written ``last.ckpt``;
- :func:`settings_record` / :func:`read_metrics`: the run's settings record and results, read with an error that
  names the file when they are damaged.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from mmfusion.config import yaml_load
from mmfusion.errors import DataError, shorten
from mmfusion.io import atomic_write_bytes


class EpochSampler(torch.utils.data.Sampler[int]):
    """A random permutation of ``range(n)`` per epoch, drawn from a generator seeded with ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every training epoch (a resumed run included), so epoch ``e``'s order
    does not depend on how many epochs this process has iterated before."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


class RandomStates(Callback):
    """Saves every random number generator's state in each checkpoint and restores it when training resumes, so
    the dropout masks (and anything else drawn at random) of the resumed epochs are the uninterrupted run's."""

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
            "python": _plain_python_state(random.getstate()),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _plain_python_state(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [int(version), list(internal), gauss]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing through :func:`mmfusion.io.atomic_write_bytes` (temporary file,
    fsync, rename): the previous checkpoint stays whole until the new one is complete, and a failed write (a full
    disk) names the checkpoint file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


def read_metrics(path: Path) -> dict[str, Any]:
    """A finished run's ``metrics.json``: a :class:`DataError` naming the file when it is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"damaged results file ({shorten(str(exc), 120)}); delete it to test the run again from "
                        "its checkpoints, or choose another --out", file=path) from None
    if not isinstance(data, dict):
        raise DataError("damaged results file; delete it to test the run again from its checkpoints, or choose "
                        "another --out", file=path, expected="a JSON object", actual=type(data).__name__)
    return data


def settings_record(path: Path) -> dict[str, Any] | None:
    """The settings a run was made with, from its ``config.yaml``; None when the file does not exist. A file that
    exists but cannot be read as a settings record is a :class:`DataError` naming it (resuming would otherwise
    compare against nothing and report results under settings that never ran)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"the run's settings record cannot be read ({shorten(str(exc), 120)}); a run cannot be "
                        "resumed without it: choose another --out", file=path) from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:  # RefusedYAML (aliases, repeated keys) included
        raise DataError(f"the run's settings record is damaged ({shorten(str(exc), 120)}); a run cannot be "
                        "resumed without it: choose another --out", file=path) from None
    if not isinstance(data, Mapping) or not data:
        raise DataError("the run's settings record is damaged; a run cannot be resumed without it: choose another "
                        "--out", file=path, expected="the run's settings (a YAML mapping)",
                        actual=type(data).__name__)
    return dict(data)


def checkpoint_record(path: Path) -> dict[str, Any] | None:
    """The settings record stored in a checkpoint's metadata (``hyper_parameters.meta.run_config``); None for a
    checkpoint written before checkpoints held one. A checkpoint that cannot be read is a :class:`DataError`."""
    from mmfusion.engine.checkpoints import read_hparams

    try:
        meta = read_hparams(path).get("meta") or {}
    except DataError as exc:
        raise DataError(f"cannot resume from this checkpoint ({exc}); delete it to train the run from the start",
                        file=path) from None
    record = meta.get("run_config") if isinstance(meta, Mapping) else None
    return dict(record) if isinstance(record, Mapping) else None

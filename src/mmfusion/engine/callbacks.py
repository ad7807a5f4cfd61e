"""Lightning callbacks used by the runs."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class EpochTimer(L.Callback):
    """Records the wall-clock seconds of every training epoch (the bench reports their mean)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.seconds.append(time.perf_counter() - self._t)

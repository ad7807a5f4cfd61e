"""The LightningModule: a registered model plus the task loss, optimiser, scheduler and metrics.

It is built from plain data only (model name, model args, feature sizes, task), saved as hyper-parameters, so every
checkpoint rebuilds its model by itself and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmfusion.batch import Batch
from mmfusion.engine.config import TrainConfig
from mmfusion.metrics import classification_metrics, emotion_metrics, main_metric, sentiment_metrics
from mmfusion.models import build


def task_loss(pred: Tensor, labels: Tensor, task: str, loss: str = "mse") -> Tensor:
    """MSE (or L1) on scores for regression; mean cross-entropy over the E binary emotions for emotion tasks.

    pred: (B, 1) or (B, 2E); labels: (B,) float or (B, E) long.
    """
    if task == "regression":
        p = pred.reshape(-1)
        return F.mse_loss(p, labels.float()) if loss == "mse" else F.l1_loss(p, labels.float())
    if task == "classification":
        return F.cross_entropy(pred, labels.long())
    E = labels.shape[1]
    return F.cross_entropy(pred.reshape(-1, E, 2).reshape(-1, 2), labels.reshape(-1))


def compute_metrics(pred: np.ndarray, labels: np.ndarray, task: str, emotions: Sequence[str]) -> dict[str, float]:
    if task == "regression":
        return sentiment_metrics(pred.reshape(-1), labels)
    if task == "classification":
        return classification_metrics(pred, labels)
    return emotion_metrics(pred, labels, emotions)


def train_config(train: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    """``train`` as a :class:`TrainConfig`: its defaults are the only ones (a mapping keeps the fields it knows)."""
    if isinstance(train, TrainConfig):
        return train
    return TrainConfig(**{k: v for k, v in (train or {}).items() if k in TrainConfig.__dataclass_fields__})


class FusionSystem(L.LightningModule):
    """Training/validation/prediction around any registered model (see :mod:`mmfusion.models.registry`)."""

    def __init__(self, model_name: str, model_args: Mapping[str, Any], feature_dims: Mapping[str, int],
                 output_dim: int, task: str, emotions: Sequence[str] = (),
                 train: TrainConfig | Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None) -> None:
        """``train``: the run's :class:`TrainConfig`, or its fields as a mapping (as a checkpoint records them;
        fields it lacks take TrainConfig's defaults, fields TrainConfig no longer has are ignored)."""
        if isinstance(train, TrainConfig):  # recorded as plain values: a checkpoint holds no Python objects
            train = asdict(train)  # (save_hyperparameters reads the arguments' current values)
        super().__init__()
        self.save_hyperparameters()
        self.model = build(model_name, feature_dims, output_dim, **dict(model_args))
        self.task = task
        self.emotions = tuple(emotions)
        self.train_cfg = train_config(train)
        self._val_outputs: list[tuple[Tensor, Tensor]] = []
        self.val_history: list[dict[str, float]] = []
        self.curve: list[dict[str, float]] = []  # per epoch: train and validation task loss (learning curves)
        self.diverged: dict[str, Any] | None = None  # epoch, step and loss where the training loss first became
        # NaN or infinite

    def forward(self, batch: Batch) -> dict[str, Any]:
        return self.model(batch.features, batch.masks)

    def _step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        out = self(batch)
        loss = task_loss(out["pred"], batch.labels, self.task, self.train_cfg.loss)
        total = loss
        if stage == "train" and self.train_cfg.branch_losses and "branches" in out:
            # each branch on its own loss (the MSAF authors' NTU recipe), instead of the loss of the joint logits
            total = sum(task_loss(b, batch.labels, self.task, self.train_cfg.loss)
                        for b in out["branches"].values())
        for name, value in out.get("losses", {}).items():
            total = total + value
            self.log(f"{stage}_{name}", value.detach(), batch_size=len(batch), on_epoch=True, on_step=False,
                     sync_dist=True)
        for name, value in out.get("monitor", {}).items():  # diagnostics, not optimised (e.g. discriminator
            # accuracy on MEA's codes)
            self.log(f"{stage}_{name}", value.detach().float(), batch_size=len(batch), on_epoch=True,
                     on_step=False, sync_dist=True)
        self.log(f"{stage}_task_loss", loss.detach(), batch_size=len(batch), on_epoch=True, on_step=False,
                 sync_dist=True)
        # sync_dist: with several devices each sees a share of the batches; checkpoint choice and early stopping
        # must read the loss over all of them (one device: no cost)
        self.log(f"{stage}_loss", (loss if stage == "val" else total).detach(), batch_size=len(batch),
                 on_epoch=True, on_step=False, prog_bar=True, sync_dist=True)
        return total, out["pred"]

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Tell a model with a schedule over training (MEA's λ ramp) how far training has come, p ∈ [0, 1]."""
        if hasattr(self.model, "training_progress"):
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            self.model.training_progress = min(self.global_step / total, 1.0)

    def on_train_epoch_end(self) -> None:
        """One learning-curve point per epoch: the epoch means of the training and validation losses (Lightning
        runs this epoch's validation before this hook)."""
        m = self.trainer.callback_metrics
        point = {"epoch": float(self.current_epoch)}
        for key in ("train_task_loss", "train_loss", "val_loss", "val_disc_acc_agnostic", "val_disc_acc_exclusive",
                    "train_disc_acc_agnostic", "train_disc_acc_exclusive", "train_omega"):
            if key in m:
                point[key] = float(m[key])
        self.curve.append(point)

    def on_train_end(self) -> None:
        if hasattr(self.model, "training_progress"):  # evaluation and inference use the full λ
            self.model.training_progress = 1.0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        loss = self._step(batch, "train")[0]
        bad = not bool(torch.isfinite(loss.detach()))
        several = self.trainer.world_size > 1
        if several:  # every device stops at the same step, or the others would wait for it forever
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:  # diverged: stop here instead of training on NaN weights
            self.diverged = {"epoch": int(self.current_epoch), "step": int(self.global_step),
                             "loss": float(loss.detach())}
            self.trainer.should_stop = True
            if several:  # zero gradients, through the same collective operations on every device
                return sum((p * 0.0).sum() for p in self.parameters() if p.requires_grad)
            return None  # no update from this batch
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        _, pred = self._step(batch, "val")
        self._val_outputs.append((pred.detach().float().cpu(), batch.labels.cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        pred_t = torch.cat([p for p, _ in self._val_outputs])
        labels_t = torch.cat([y for _, y in self._val_outputs])
        self._val_outputs.clear()
        if self.trainer.world_size > 1:  # every device scored a share of the split: the metrics need all of it
            pred_t, labels_t = (self._gather_split(t) for t in (pred_t, labels_t))
        pred, labels = pred_t.numpy(), labels_t.numpy()
        with np.errstate(all="ignore"):  # a diverging model's inf/NaN scores give NaN metrics, said once by fit
            metrics = compute_metrics(pred, labels, self.task, self.emotions)
        key = main_metric(self.task)[0]
        # the same value on every device; sync_dist only keeps Lightning from warning that it might not be
        self.log(f"val_{key}", metrics[key], prog_bar=True, sync_dist=True)
        for k in {"regression": ("mae", "acc2_non0"), "emotion": ("acc_mean",), "classification": ("f1",)}[self.task]:
            self.log(f"val_{k}", metrics[k], sync_dist=True)

    def _gather_split(self, local: Tensor) -> Tensor:
        """The whole validation split's rows from every device's share, in the split's order.

        Lightning's distributed sampler (no shuffling) gives device r the samples r, r + W, r + 2W, ... of the
        split padded with its first samples to a multiple of W; interleaving the shares back and dropping the
        padding restores each sample exactly once.
        """
        parts = self.all_gather(local.to(self.device))  # (W, n, ...)
        rows = parts.transpose(0, 1).flatten(0, 1).cpu()
        return rows[: len(self.trainer.val_dataloaders.dataset)]

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        out = self(batch)
        return {"ids": batch.ids, "pred": out["pred"].detach().float().cpu(), "labels": batch.labels.cpu()}

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.train_cfg
        kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
        # The fused kernel saves ~10 % of a CPU training step for models with many small tensors. Under mixed
        # precision Lightning cannot clip the gradients of an optimizer that unscales them itself, so it is used
        # only at full precision.
        fused = "mixed" not in str(cfg.precision)
        try:
            opt = torch.optim.Adam(self.parameters(), fused=fused, **kwargs)
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam(self.parameters(), **kwargs)
        if cfg.lr_schedule == "constant":
            return {"optimizer": opt}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        return batch.to(device)

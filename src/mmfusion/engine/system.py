"""The LightningModule: a registered model plus the task loss, optimiser, scheduler and metrics.

It is built from plain data only (model name, model args, feature sizes, task), saved as hyper-parameters, so every
checkpoint rebuilds its model by itself and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmfusion.batch import Batch
from mmfusion.engine.config import TrainConfig
from mmfusion.errors import ConfigError
from mmfusion.metrics import classification_metrics, emotion_metrics, main_metric, sentiment_metrics
from mmfusion.models import build

CALIBRATION_BATCHES = 32  # training batches a model's ``calibrate`` reads before each validation


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


def branch_names(model: nn.Module) -> list[str]:
    """The branches of a model that returns each branch's logits (``out["branches"]``, e.g. ``msaf_ntu``'s rgb and
    skeleton): its modalities that are submodules of their own. Fewer than two is a :class:`ConfigError`."""
    names = [m for m in getattr(model, "modalities", ()) if isinstance(getattr(model, m, None), nn.Module)]
    if len(names) < 2:
        raise ConfigError("train.branch_optimizers needs a model with a branch per modality (e.g. msaf_ntu)",
                          source="train", key="branch_optimizers", expected="false for this model",
                          actual=type(model).__name__)
    return names


def branch_parameters(model: nn.Module, names: Sequence[str]) -> dict[str, list[nn.Parameter]]:
    """Per branch, the parameters its optimiser steps: the branch's own (its submodule and a ``<branch>_fc`` head)
    and every parameter of no branch (the fusion blocks), as the authors' ``get_visual_params`` and
    ``get_skeleton_params`` give their two optimisers."""
    own: dict[str, list[nn.Parameter]] = {b: [] for b in names}
    shared: list[nn.Parameter] = []
    for key, p in model.named_parameters():
        head = key.split(".", 1)[0].removesuffix("_fc")
        (own[head] if head in own else shared).append(p)
    return {b: own[b] + shared for b in names}


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
        # branch_optimizers: one optimiser per branch, stepped by hand in training_step (the MSAF authors' NTU step)
        self.branch_names = branch_names(self.model) if self.train_cfg.branch_optimizers else []
        self.automatic_optimization = not self.branch_names

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
        runs this epoch's validation before this hook). With hand-stepped optimisers, their schedules step here."""
        m = self.trainer.callback_metrics
        if not self.automatic_optimization:
            schedulers = self.lr_schedulers()
            for sched in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    if "val_loss" in m:
                        sched.step(float(m["val_loss"]))
                else:
                    sched.step()
        point = {"epoch": float(self.current_epoch)}
        for key in ("train_task_loss", "train_loss", "val_loss", "val_disc_acc_agnostic", "val_disc_acc_exclusive",
                    "train_disc_acc_agnostic", "train_disc_acc_exclusive", "train_omega"):
            if key in m:
                point[key] = float(m[key])
        self.curve.append(point)

    def on_validation_epoch_start(self) -> None:
        """A model whose evaluation reads statistics of training data (``calibrate``: MEA's agnostic_norm)
        re-estimates them on up to CALIBRATION_BATCHES training batches before each validation of a fit."""
        calibrate = getattr(self.model, "calibrate", None)
        if calibrate is None or self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        loader = self.trainer.train_dataloader
        batches = (self.transfer_batch_to_device(b, self.device, 0)
                   for b in itertools.islice(loader, CALIBRATION_BATCHES))
        calibrate((b.features, b.masks) for b in batches)

    def on_train_end(self) -> None:
        if hasattr(self.model, "training_progress"):  # evaluation and inference use the full λ
            self.model.training_progress = 1.0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if self.branch_names:
            self._branch_steps(batch)
            return None
        loss = self._step(batch, "train")[0]
        if self._diverged(loss):
            if self.trainer.world_size > 1:  # zero gradients, through the same collective operations on every
                # device
                return sum((p * 0.0).sum() for p in self.parameters() if p.requires_grad)
            return None  # no update from this batch
        return loss

    def _diverged(self, loss: Tensor) -> bool:
        """True (and training told to stop, the place recorded) when ``loss`` is NaN or infinite on any device."""
        bad = not bool(torch.isfinite(loss.detach()))
        if self.trainer.world_size > 1:  # every device stops at the same step, or the others would wait forever
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:  # diverged: stop here instead of training on NaN weights
            self.diverged = {"epoch": int(self.current_epoch), "step": int(self.global_step),
                             "loss": float(loss.detach())}
            self.trainer.should_stop = True
        return bad

    def _branch_steps(self, batch: Batch) -> None:
        """The MSAF authors' NTU training step (``ntu_rgb_d/main_msaf.py``, ``step``): for each branch in turn a
        forward pass, that branch's loss, and a step of that branch's optimiser, which holds the branch's parameters
        and the shared ones (MSAF's blocks); the next branch's forward pass sees the updated weights."""
        cfg, n = self.train_cfg, len(batch)
        optimizers = self.optimizers()
        total, joint = torch.zeros((), device=self.device), None
        for name, opt in zip(self.branch_names, optimizers if isinstance(optimizers, list) else [optimizers],
                             strict=True):
            out = self(batch)
            loss = task_loss(out["branches"][name], batch.labels, self.task, cfg.loss)
            if joint is None:  # the loss of the joint prediction, before any step of this batch
                joint = task_loss(out["pred"], batch.labels, self.task, cfg.loss).detach()
            if self._diverged(loss):
                return
            opt.zero_grad()
            self.manual_backward(loss)
            if cfg.grad_clip:
                self.clip_gradients(opt, gradient_clip_val=cfg.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
            total = total + loss.detach()
            self.log(f"train_loss_{name}", loss.detach(), batch_size=n, on_epoch=True, on_step=False,
                     sync_dist=True)
        self.log("train_task_loss", joint, batch_size=n, on_epoch=True, on_step=False, sync_dist=True)
        self.log("train_loss", total, batch_size=n, on_epoch=True, on_step=False, prog_bar=True, sync_dist=True)

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

    def configure_optimizers(self) -> dict[str, Any] | list[dict[str, Any]]:
        """Adam over every parameter, or with ``branch_optimizers`` one Adam per branch over the branch's parameters
        and the shared ones (:func:`branch_parameters`); each with the schedule ``lr_schedule`` names."""
        if not self.branch_names:
            return self._optimizer(list(self.parameters()))
        groups = branch_parameters(self.model, self.branch_names)
        return [self._optimizer(groups[name]) for name in self.branch_names]

    def _optimizer(self, params: list[nn.Parameter]) -> dict[str, Any]:
        cfg = self.train_cfg
        kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
        # The fused kernel saves ~10 % of a CPU training step for models with many small tensors. Under mixed
        # precision Lightning cannot clip the gradients of an optimizer that unscales them itself, so it is used
        # only at full precision.
        fused = "mixed" not in str(cfg.precision)
        try:
            opt = torch.optim.Adam(params, fused=fused, **kwargs)
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam(params, **kwargs)
        if cfg.lr_schedule == "constant":
            return {"optimizer": opt}
        if cfg.lr_schedule == "multistep":  # x lr_factor before each milestone epoch (0-based), as the authors'
            # NTU script does at epochs 5 and 20
            step = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(cfg.lr_milestones), gamma=cfg.lr_factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": step}}  # (Lightning's interval: epoch)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor,
                                                           patience=cfg.lr_patience)
        if self.branch_names:  # stepped by hand in on_train_epoch_end, with the validation loss
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched}}
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"}}

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        return batch.to(device)

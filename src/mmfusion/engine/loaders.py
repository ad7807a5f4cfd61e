"""What a run reads: the checks that a dataset suits a model and a training run, and its data loaders.
"""

from __future__ import annotations

from typing import Any

import torch

from mmfusion.data import DatasetBundle, FusionDataset
from mmfusion.engine.config import TrainConfig
from mmfusion.errors import ConfigError
from mmfusion.models import list_models, model_inputs


def check_model_reads(model: str, bundle: DatasetBundle) -> None:
    """Refuse a model that cannot read this data (a clip network on feature sequences, or the other way round)
    before any run starts, naming the models that can."""
    have = bundle.inputs
    if model_inputs(model) != have:
        kind = {"sequences": "feature sequences", "clips": "raw video/audio clips"}
        raise ConfigError(f"{bundle.source} holds {kind[have]}, which {model} does not read", key="model",
                          expected=f"one of {list_models(have)}", actual=model)


def require_training_splits(bundle: DatasetBundle) -> None:
    """Training needs labelled train, valid and test splits: say which is missing before any run starts."""
    for split in ("train", "valid", "test"):
        bundle.split(split)


def make_loader(bundle: DatasetBundle, split: str, batch_size: int, shuffle: bool, num_workers: int = 0,
                seed: int = 0, *, labeled: bool = True) -> torch.utils.data.DataLoader:
    """Batches of ``split`` (a clear error if the bundle lacks it or, with ``labeled``, its labels)."""
    ds = FusionDataset(bundle.split(split, labeled=labeled), augment=shuffle)  # shuffled: the training batches
    # shuffled: epoch e's order depends on (seed, e) only, so a resumed run sees the uninterrupted run's batches
    sampler = _epoch_sampler(len(ds), seed) if shuffle else None
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=ds.collate,
                                       num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def _epoch_sampler(n: int, seed: int) -> torch.utils.data.Sampler[int]:
    from mmfusion.engine.resume import EpochSampler

    return EpochSampler(n, seed)


def training_loaders(bundle: DatasetBundle, tc: TrainConfig, seed: int) -> tuple[Any, Any]:
    """The train and valid loaders of a run: the train split in global batches of ``tc.batch_size`` shuffled from
    ``seed``, each process taking its share (:class:`~mmfusion.engine.distributed.GlobalBatchSampler`; one process
    draws the batches ``make_loader(..., shuffle=True)`` would), and the valid split interleaved across the processes
    (:class:`~mmfusion.engine.distributed.ShardSampler`) for the whole-split metrics."""
    from mmfusion.engine.distributed import GlobalBatchSampler, ShardSampler

    train = FusionDataset(bundle.split("train"), augment=True)
    # reference_selection: the checkpoint is chosen on the test split itself, exactly as the MSAF authors did
    valid = FusionDataset(bundle.split("test" if tc.reference_selection else "valid"))
    gen = torch.Generator().manual_seed(seed)
    order = _epoch_sampler(len(train), seed)  # epoch e's order depends on (seed, e) only: a resume sees the same
    train_loader = torch.utils.data.DataLoader(train, batch_sampler=GlobalBatchSampler(order, tc.batch_size),
                                               collate_fn=train.collate, num_workers=tc.num_workers, generator=gen)
    val_loader = torch.utils.data.DataLoader(valid, batch_size=tc.batch_size, sampler=ShardSampler(valid),
                                             collate_fn=valid.collate, num_workers=tc.num_workers)
    return train_loader, val_loader

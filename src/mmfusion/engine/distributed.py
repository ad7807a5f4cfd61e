"""Batches that do not depend on how many processes train: one global batch, split across the processes.

``train.batch_size`` is the *global* batch. With W processes (``--devices`` × ``--num-nodes``, or as many as
``torchrun``/SLURM start) each process takes a contiguous 1/W of every global batch, and DDP's gradient average over
the processes equals the gradient of the whole global batch. The global batches themselves are the ones a single
process draws (the same shuffle, from the same seeded generator), so a run on W processes follows the single-process
run up to floating-point summation order (the last, smaller batch of an epoch is padded with its own first samples to
a multiple of W, as Lightning's distributed sampler pads).

The samplers read the process count and rank from ``torch.distributed`` when they are iterated, so they serve every
launcher Lightning supports (its own, ``torchrun``, SLURM, spawn) without knowing which one started the process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler


def world() -> tuple[int, int]:
    """(number of processes, this process's rank) of the initialised process group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class GlobalBatchSampler(Sampler[list[int]]):
    """This process's share of each global batch of an epoch, cut from ``sampler``'s order.

    With one process it yields exactly the batches of ``DataLoader(dataset, batch_size, sampler=sampler)``; with W
    processes, rank r yields the r-th contiguous 1/W of each of those batches. ``batch_size`` must divide by W
    (checked by the run config). Lightning calls ``sampler.set_epoch`` before each epoch (it looks for the batch
    sampler's ``sampler``), so an order that depends on the epoch (the run's
    :class:`~mmfusion.engine.resume.EpochSampler`) is the same in every process and after a resume.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size

    def _shape(self) -> tuple[int, int]:
        w, rank = world()
        if self.batch_size % w:
            raise ValueError(f"the global batch of {self.batch_size} does not split into {w} equal shares")
        return w, rank

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        w, rank = self._shape()
        order = list(self.sampler)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            if w > 1:
                per = -(-len(batch) // w)  # the last batch: padded with its first samples to a multiple of w
                batch = (batch * w)[:per * w]
                yield batch[rank * per:(rank + 1) * per]
            else:
                yield batch


class ShardSampler(Sampler[int]):
    """Rank r of W reads samples r, r + W, r + 2W, ... of the split in order, padded with its first samples to a
    multiple of W (Lightning's distributed sampler without shuffling); one process reads the split as it is.
    :meth:`mmfusion.engine.system.FusionSystem._gather_split` undoes this interleaving."""

    def __init__(self, data: Sized) -> None:
        self.data = data

    def __len__(self) -> int:
        w, _ = world()
        return -(-len(self.data) // w)

    def __iter__(self) -> Iterator[int]:
        w, rank = world()
        n = len(self.data)
        total = -(-n // w) * w
        indices = list(range(n))
        while len(indices) < total:
            indices += indices[: total - len(indices)]
        return iter(indices[rank:total:w])

"""Global batches split across processes: the samplers give every process its share and one process the batches
a shuffled DataLoader draws."""

import pytest
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader, DistributedSampler

from mmfusion.engine import distributed
from mmfusion.engine.config import TrainConfig
from mmfusion.engine.distributed import GlobalBatchSampler, ShardSampler
from mmfusion.engine.resume import EpochSampler
from mmfusion.errors import ConfigError


def test_one_process_draws_the_batches_of_a_shuffled_loader():
    data = list(range(50))
    plain_order, our_order = EpochSampler(50, 7), EpochSampler(50, 7)
    plain = DataLoader(data, batch_size=8, sampler=plain_order)
    ours = DataLoader(data, batch_sampler=GlobalBatchSampler(our_order, 8))
    epochs = []
    for epoch in range(3):  # as Lightning does before each epoch: on the sampler, and on the batch sampler's sampler
        _set_sampler_epoch(plain, epoch)
        _set_sampler_epoch(ours, epoch)
        batches = [b.tolist() for b in ours]
        assert batches == [b.tolist() for b in plain]
        epochs.append(batches)
    assert epochs[0] != epochs[1]  # a new order each epoch


def _shares(monkeypatch, sampler, w):
    out = []
    for rank in range(w):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (w, rank))
        out.append(list(sampler))
    return out


def test_processes_split_each_global_batch(monkeypatch):
    # 21 samples = 2 full batches of 8 and a last one of 5
    global_batches = list(GlobalBatchSampler(EpochSampler(21, 3), 8))
    shares = _shares(monkeypatch, GlobalBatchSampler(EpochSampler(21, 3), 8), 2)  # every process: the same order
    assert [len(s) for s in shares] == [3, 3]  # every process steps the same number of times
    for k, batch in enumerate(global_batches):
        together = shares[0][k] + shares[1][k]
        if len(batch) == 8:
            assert together == batch
        else:  # the last batch is padded with its own first sample to a multiple of 2
            assert together == batch + batch[:1]


def test_shards_interleave_like_lightnings_sampler(monkeypatch):
    data = list(range(11))
    shares = _shares(monkeypatch, ShardSampler(data), 3)
    expected = [list(DistributedSampler(data, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert shares == expected


def test_an_uneven_global_batch_is_refused_by_name():
    with pytest.raises(ConfigError, match="batch_size.*multiple of 4"):
        TrainConfig(batch_size=6, devices=2, num_nodes=2).validate(source="x")
    with pytest.raises(ConfigError, match="strategy"):
        TrainConfig(strategy="fsdp", accelerator="cpu").validate(source="x")
    with pytest.raises(ConfigError, match="did you mean 'ddp_spawn'"):
        TrainConfig(strategy="ddp-spawn").validate(source="x")

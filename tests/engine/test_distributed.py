"""Global batches split across processes: the samplers give every process its share and one process the batches
a shuffled DataLoader draws."""

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from mmfusion.engine import distributed
from mmfusion.engine.distributed import GlobalBatchSampler, ShardSampler
from mmfusion.engine.runs import TrainConfig
from mmfusion.errors import ConfigError


def test_one_process_draws_the_batches_of_a_shuffled_loader():
    data = list(range(50))
    plain = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    ours = DataLoader(data, batch_sampler=GlobalBatchSampler(data, 8, gen), generator=gen)
    for _ in range(3):  # epochs: the generator advances the same way
        assert [b.tolist() for b in ours] == [b.tolist() for b in plain]


def _shares(monkeypatch, sampler, w):
    out = []
    for rank in range(w):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (w, rank))
        if isinstance(sampler, GlobalBatchSampler):  # every process seeds its generator alike
            sampler.generator.manual_seed(3)
        out.append(list(sampler))
    return out


def test_processes_split_each_global_batch(monkeypatch):
    data = list(range(21))  # 21 = 2 full batches of 8 and a last one of 5
    global_batches = list(GlobalBatchSampler(data, 8, torch.Generator().manual_seed(3)))
    shares = _shares(monkeypatch, GlobalBatchSampler(data, 8, torch.Generator()), 2)
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

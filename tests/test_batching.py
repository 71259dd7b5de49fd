"""Tests of slamags_core.batching: the fixed pool shares of every step, the seeded passes over
each pool, the split of a step between processes, and where the pools are placed."""
import pytest
import torch

from slamags_core import batching


def test_shares_are_proportional_and_fixed():
    assert batching.batch_shares(30, 90, 16) == (4, 12)
    assert batching.batch_shares(1000, 1000, 256) == (128, 128)
    assert batching.batch_shares(10, 10_000, 64) == (2, 62)  # at least two of each pool
    assert batching.batch_shares(30, 90, 16, world_size=4) == (4, 12)
    assert batching.batch_shares(33, 90, 16, world_size=4) == (4, 12)  # multiples of the 4 processes
    assert batching.batch_shares(3, 40, 64) == (3, 40)  # small pools: all they have, no repeats
    assert batching.batch_shares(5, 40, 64, world_size=2) == (4, 40)
    with pytest.raises(ValueError, match="too small"):
        batching.batch_shares(1, 40, 64)
    with pytest.raises(ValueError, match="multiple of the 3"):
        batching.batch_shares(100, 100, 16, world_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        batching.batch_shares(10, 10, 2)


def test_every_patch_once_per_pass_never_twice_in_a_step():
    s = batching.BatchSampler(30, 90, 16, seed=0)
    assert s.shares == (4, 12)
    steps = [s.batch(i) for i in range(7)]  # 30 // 4 = 7 steps per pass of the positive pool
    pos = torch.cat([b[0] for b in steps])
    assert len(pos) == 28 and len(set(pos.tolist())) == 28  # one pass: no patch twice
    neg = torch.cat([b[1] for b in steps])
    assert len(set(neg.tolist())) == 84
    nxt = torch.cat([s.batch(i)[0] for i in range(7, 14)])  # the next pass: a new permutation
    assert len(set(nxt.tolist())) == 28 and not torch.equal(nxt, pos)
    for i in range(40):
        p, n = s.batch(i)
        assert len(p) == 4 and len(n) == 12 and len(set(p.tolist())) == 4


def test_batches_are_a_function_of_seed_and_step():
    a, b = batching.BatchSampler(20, 20, 8, seed=0), batching.BatchSampler(20, 20, 8, seed=0)
    c = batching.BatchSampler(20, 20, 8, seed=1)
    for i in (7, 0, 3, 11):  # any order: nothing depends on earlier calls
        assert torch.equal(a.batch(i)[0], b.batch(i)[0]) and torch.equal(a.batch(i)[1], b.batch(i)[1])
    assert not all(torch.equal(a.batch(i)[0], c.batch(i)[0]) for i in range(4))


def test_shards_split_the_global_batch():
    s = batching.BatchSampler(40, 40, 16, seed=0, world_size=2)
    p, n = s.batch(5)
    (p0, n0), (p1, n1) = s.shard(5, 0), s.shard(5, 1)
    assert torch.equal(torch.cat([p0, p1]), p) and torch.equal(torch.cat([n0, n1]), n)


def test_pool_placement_follows_the_free_device_memory(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 2**30, 80 * 2**30))
    assert batching.pools_fit(12 * 2**30, cuda, "auto")  # the paper's 12 GB pools on an empty H100
    assert not batching.pools_fit(21 * 2**30, cuda, "auto")  # more than half the free memory
    assert batching.pools_fit(21 * 2**30, cuda, "device") and not batching.pools_fit(1, cuda, "host")
    assert not batching.pools_fit(1, torch.device("cpu"), "auto")  # the CPU reads its storage

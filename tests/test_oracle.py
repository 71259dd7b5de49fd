"""The `oracle` ceiling: instance labels of the training bags' positive pool reach the loss, and
nothing else changes (pool alignment, the balanced loss by hand, checkpoint identity, errors)."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slamags_core import batching as B
from slamags_core import pretrain as P
from slamags_core import strategies as S
from slamags_core.bags import PatchPool, SyntheticSource, build_bags
from slamags_core.config import METHODS, BagConfig, CellConfig, PretrainConfig
from slamags_core.monitor import CollapseWarning

CFG = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=12, proj_dim=8, steps=6,
                     batch_size=16, lr=0.05, warmup_steps=0, checkpoint_every=3, log_every=3,
                     monitor_size=16, seed=1)


def test_oracle_is_a_method_marked_as_using_instance_labels():
    assert "oracle" in METHODS
    assert S.STRATEGIES["oracle"].instance_labels and S.STRATEGIES["oracle"].head
    assert not any(s.instance_labels for m, s in S.STRATEGIES.items() if m != "oracle")


def test_pool_labels_are_aligned_with_the_positive_pool():
    bs = build_bags(SyntheticSource(CellConfig(image_size=32)),
                    BagConfig(bag_size=10, witness_rate=0.3, n_train=6, n_val=2, n_test=2, seed=0))
    pos, neg = bs.pretraining_pools()
    train_pos = np.isin(bs.bag_index, bs.split_bags("train")) & (bs.bag_labels[bs.bag_index] == 1)
    np.testing.assert_array_equal(np.asarray(pos), bs.images[train_pos])
    np.testing.assert_array_equal(pos.labels, (bs.cell_types[train_pos] == "BLA").astype(int))
    assert pos.labels.sum() == 3 * 3  # 3 positive training bags x 3 witnesses
    assert not neg.labels.any()  # negative bags hold no witnesses
    assert pos.images is bs.images  # an index view: the oracle's labels come without a copy


def test_oracle_loss_is_the_class_balanced_cross_entropy():
    torch.manual_seed(0)
    head = torch.nn.Linear(5, 2)
    h = torch.randn(8, 5)  # both views of 4 patches
    y = torch.tensor([1, 0, 0, 0])
    loss = S._loss_oracle({"all": (h, None)}, y, CFG, head)["cls"]
    ce = F.cross_entropy(head(h), torch.cat([y, y]), reduction="none")
    y2 = torch.cat([y, y])
    torch.testing.assert_close(loss, 0.5 * ce[y2 == 1].mean() + 0.5 * ce[y2 == 0].mean())
    no_witness = S._loss_oracle({"all": (h, None)}, torch.zeros(4, dtype=torch.long), CFG, head)["cls"]
    torch.testing.assert_close(no_witness, F.cross_entropy(head(h), torch.zeros(8, dtype=torch.long)))


def _pools(n=24, size=16):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def _run(tmp_path=None, **kw):
    pos, neg = _pools()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        return P.pretrain("oracle", pos, neg, CFG, device="cpu", progress=False,
                          out_dir=tmp_path, **kw)


def _spy(monkeypatch):
    """Record the targets the oracle's loss receives at every training step."""
    seen = []
    real = S._loss_oracle

    def spy(out, y, cfg, head):
        if len(y) == CFG.batch_size:  # not the 2-patch probe of _unused_parameters
            seen.append(y.clone())
        return real(out, y, cfg, head)

    monkeypatch.setitem(S.STRATEGIES, "oracle", dataclasses.replace(S.STRATEGIES["oracle"], loss_fn=spy))
    return seen


def _expected_targets(labels, n_pos=24, n_neg=24):
    """Step s: the labels of the positive patches the batch plan samples, then 0 per negative."""
    sampler = B.BatchSampler(n_pos, n_neg, CFG.batch_size, CFG.seed)
    out = []
    for step in range(CFG.steps):
        pi, ni = sampler.batch(step)
        out.append(torch.cat([torch.as_tensor(labels)[pi].long(), torch.zeros(len(ni), dtype=torch.long)]))
    return out


def test_oracle_sees_exactly_the_labels_of_the_sampled_patches(monkeypatch):
    seen = _spy(monkeypatch)
    labels = np.zeros(24, dtype=int)
    labels[[3, 7, 11, 20]] = 1
    _run(pos_labels=labels)
    expected = _expected_targets(labels)
    assert len(seen) == CFG.steps
    for step, (y, ref) in enumerate(zip(seen, expected)):
        assert torch.equal(y, ref), step
    # 6 steps x 8 positives = 2 passes over the 24 positives: each witness seen twice; slide
    # labels would have given 48 ones
    assert int(torch.stack(seen).sum()) == 2 * labels.sum()


def test_oracle_reads_the_labels_a_patch_pool_carries(monkeypatch):
    seen = _spy(monkeypatch)
    pos, neg = _pools()
    labels = (np.arange(24) % 5 == 0).astype(int)
    storage = np.concatenate([neg[:10], pos])  # the pool is an index view into a larger storage
    pool = PatchPool(storage, np.arange(10, 34), labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        from_pool = P.pretrain("oracle", pool, neg, CFG, device="cpu", progress=False)
    for y, ref in zip(seen, _expected_targets(labels)):
        assert torch.equal(y, ref)
    from_array = _run(pos_labels=labels)  # same pixels, same labels: the same training
    for k, v in from_pool.encoder.state_dict().items():
        assert torch.equal(v, from_array.encoder.state_dict()[k]), k
    with pytest.raises(ValueError, match="differ from the instance labels"):
        P.pretrain("oracle", pool, neg, CFG, device="cpu", progress=False, pos_labels=1 - labels)


def test_instance_targets_in_the_gathered_layout_of_two_processes():
    """Every process computes the loss on the gathered batch ([rank 0: pos, neg; rank 1: pos,
    neg]): its targets hold each process's share of the labels, looked up from the step's plan."""
    import types

    labels = torch.arange(24) % 2
    sampler = B.BatchSampler(24, 24, CFG.batch_size, CFG.seed, world_size=2)
    for rank in (0, 1):
        run = types.SimpleNamespace(ctx=types.SimpleNamespace(world_size=2, rank=rank),
                                    sampler=sampler, pos_labels=labels, device=torch.device("cpu"))
        for step in range(3):
            shares = [sampler.shard(step, r) for r in (0, 1)]
            ref = torch.cat([torch.cat([labels[pi], torch.zeros(len(ni), dtype=torch.long)])
                             for pi, ni in shares])
            assert torch.equal(P._instance_targets(run, step, len(shares[rank][1])), ref)


def test_oracle_checkpoint_is_tied_to_its_labels(tmp_path):
    labels = np.arange(24) % 3 == 0
    _run(tmp_path, pos_labels=labels)
    _run(tmp_path, pos_labels=labels)  # same labels: the finished run is reloaded
    with pytest.raises(ValueError, match="other pools"):
        _run(tmp_path, pos_labels=~labels)


@pytest.mark.parametrize("labels,match", [(None, "needs pos_labels"),
                                          (np.zeros(5), "must be 24 values"),
                                          (np.full(24, 2), "must be 24 values")])
def test_oracle_label_errors(labels, match):
    with pytest.raises(ValueError, match=match):
        _run(pos_labels=labels)

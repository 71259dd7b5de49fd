"""The `oracle` ceiling: instance labels of the training bags' positive pool reach the loss, and
nothing else changes (pool alignment, the balanced loss by hand, checkpoint identity, errors)."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slamags_core import pretrain as P
from slamags_core import strategies as S
from slamags_core.bags import SyntheticSource, build_bags
from slamags_core.config import METHODS, BagConfig, CellConfig, PretrainConfig
from slamags_core.monitor import CollapseWarning

CFG = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=12, proj_dim=8, epochs=1,
                     batch_size=16, lr=0.05, warmup_epochs=0, monitor_size=16, seed=1)


def test_oracle_is_a_method_marked_as_using_instance_labels():
    assert "oracle" in METHODS
    assert S.STRATEGIES["oracle"].instance_labels and S.STRATEGIES["oracle"].head
    assert not any(s.instance_labels for m, s in S.STRATEGIES.items() if m != "oracle")


def test_pool_labels_are_aligned_with_the_positive_pool():
    bs = build_bags(SyntheticSource(CellConfig(image_size=32)),
                    BagConfig(bag_size=10, witness_rate=0.3, n_train=6, n_val=2, n_test=2, seed=0))
    pos, neg = bs.pretraining_pools()
    lab = bs.pretraining_pool_labels()
    assert lab.shape == (len(pos),) and lab.dtype == np.int64
    train_pos = np.isin(bs.bag_index, bs.split_bags("train")) & (bs.bag_labels[bs.bag_index] == 1)
    np.testing.assert_array_equal(pos, bs.images[train_pos])
    np.testing.assert_array_equal(lab, (bs.cell_types[train_pos] == "BLA").astype(int))
    assert lab.sum() == 3 * 3  # 3 positive training bags x 3 witnesses


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


def test_oracle_sees_the_instance_labels(monkeypatch):
    seen = []
    real = S._loss_oracle

    def spy(out, y, cfg, head):
        seen.append(y.clone())
        return real(out, y, cfg, head)

    monkeypatch.setitem(S.STRATEGIES, "oracle", dataclasses.replace(S.STRATEGIES["oracle"], loss_fn=spy))
    labels = np.zeros(24, dtype=int)
    labels[[3, 7, 11]] = 1
    _run(pos_labels=labels)
    y = torch.cat(seen)
    assert int(y.sum()) == 3  # the three labelled witnesses, once each per epoch; slide labels would give 24
    assert len(y) == 48


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

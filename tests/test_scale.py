"""The paper's code path at a tiny size, on the CPU: memory-mapped bag sets, pool placement,
what a training step may not do (read values back from the device), torch.compile's graphs."""
import dataclasses
import inspect
import os
import warnings

import numpy as np
import pytest
import torch

from slamags_core import batching as B
from slamags_core import pretrain as P
from slamags_core import surgery
from slamags_core.bags import PatchPool, SyntheticSource, build_bags
from slamags_core.checkpoint import load_encoder
from slamags_core.config import BagConfig, CellConfig, PretrainConfig, get_preset
from slamags_core.embed import embed_images
from slamags_core.encoders import GlobalAvgPool, build_encoder
from slamags_core.monitor import CollapseWarning
from slamags_core.strategies import STRATEGIES

TINY = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=12, proj_dim=8, steps=4,
                      batch_size=16, lr=0.05, warmup_steps=0, checkpoint_every=2, log_every=1,
                      monitor_size=8, seed=0)


def _pools(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def _train(method, pos, neg, cfg=TINY, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        return P.pretrain(method, pos, neg, cfg, device="cpu", progress=False, **kw)


def _weights(enc):
    return torch.cat([v.flatten().float() for v in enc.state_dict().values()])


def test_paper_path_end_to_end_at_a_tiny_size(tmp_path):
    """ResNet-18 (the paper's encoder, 512-512-512 head) on 64 px cells, 2 steps of slam_ags,
    pools read from a memory-mapped bag set, checkpoint, reload, embed every cell from the map."""
    paper = get_preset("paper")
    cfg = dataclasses.replace(paper.pretrain, crop_size=48, steps=2, warmup_steps=1,
                              batch_size=4, checkpoint_every=1, monitor_size=4, device="cpu")
    assert (cfg.encoder, cfg.proj_dim) == ("resnet18", 512)
    bags = build_bags(SyntheticSource(CellConfig(image_size=64)),
                      BagConfig(bag_size=10, witness_rate=0.1, n_train=2, n_val=0, n_test=2),
                      out=tmp_path / "bags")
    assert isinstance(bags.images, np.memmap)
    pos, neg = bags.pretraining_pools()
    assert isinstance(pos, PatchPool) and pos.images is bags.images
    res = _train("slam_ags", pos, neg, cfg, out_dir=tmp_path / "run")
    assert [r["step"] for r in res.history] == [0, 1]
    assert all(np.isfinite(r["loss"]) for r in res.history) and "cosine" in res.history[0]
    enc = load_encoder(tmp_path / "run", cfg)
    assert torch.equal(_weights(enc), _weights(res.encoder))
    H = embed_images(enc, bags.images, cfg, batch_size=7)
    assert H.shape == (40, 512) and torch.isfinite(H).all()


def test_pools_as_arrays_tensors_or_memory_mapped_views_train_alike(tmp_path):
    bags = build_bags(SyntheticSource(CellConfig(image_size=32)),
                      BagConfig(bag_size=12, witness_rate=0.1, n_train=4, n_val=0, n_test=0),
                      out=tmp_path / "bags")
    pos, neg = bags.pretraining_pools()
    a = _train("slam_pcgrad", pos, neg, out_dir=tmp_path / "a")
    b = _train("slam_pcgrad", np.asarray(pos), torch.from_numpy(np.asarray(neg)))
    assert torch.equal(_weights(a.encoder), _weights(b.encoder)) and a.history == b.history
    # the checkpoint's data fingerprint does not depend on the container: resumable from arrays
    again = _train("slam_pcgrad", np.asarray(pos), np.asarray(neg), out_dir=tmp_path / "a")
    assert again.history == a.history


def test_pools_in_one_tensor_or_read_per_step_give_the_same_weights():
    pos, neg = _pools()
    host = _train("simclr", pos, neg, dataclasses.replace(TINY, pool_placement="host"))
    dev = _train("simclr", pos, neg, dataclasses.replace(TINY, pool_placement="device"))
    assert torch.equal(_weights(host.encoder), _weights(dev.encoder))


@pytest.mark.parametrize("method", ["slam_ags", "simclr", "weak"])
def test_a_step_reads_nothing_back_from_the_device(method, monkeypatch):
    """Host reads of tensor values (item, float, bool, tolist) would synchronise a GPU every
    step; the loop keeps losses and statistics on the device and reads them in _flush."""
    pos, neg = _pools()
    run = P._setup(method, TINY, torch.device("cpu"), B.as_pool(pos, "p", torch.device("cpu")),
                   B.as_pool(neg, "n", torch.device("cpu")))
    P._step(run, 0, 2)  # warm up (lazy initialisation may read values)

    def guard(name):
        real = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            line = "".join(inspect.stack(context=1)[1].code_context or [])
            if "randperm(" not in line:  # numbers drawn on the host (CPU generator) are fine
                raise AssertionError(f"Tensor.{name} read a value inside a training step: {line}")
            return real(self, *a, **k)
        return read

    for name in ("item", "__float__", "__int__", "__bool__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, guard(name))
    pending = [P._step(run, 1, 2)]
    monkeypatch.undo()
    (rec,) = P._flush(pending, run, "none")
    assert rec["step"] == 1 and np.isfinite(rec["loss"])
    run.pools.close()


def test_compiled_encoder_runs_the_per_task_gradients(monkeypatch):
    """torch.compile'd graphs with donated buffers refuse a backward with retain_graph=True
    (torch >= 2.6): SLAM's two disjoint graphs are each differentiated once, retain_graph=False.
    aot_eager runs the compiled autograd path on the CPU without a C compiler."""
    monkeypatch.setattr(P, "_compile", lambda m, cfg, device:
                        torch.compile(m, backend="aot_eager") if cfg.compile else m)
    seen, real = [], surgery.stacked_task_gradients

    def spy(losses, params, retain_graph=None):
        seen.append(retain_graph)
        return real(losses, params, retain_graph=retain_graph)

    monkeypatch.setattr(surgery, "stacked_task_gradients", spy)
    pos, neg = _pools()
    cfg = dataclasses.replace(TINY, steps=2, checkpoint_every=2)
    res = _train("slam_ags", pos, neg, dataclasses.replace(cfg, compile=True))
    ref = _train("slam_ags", pos, neg, cfg)
    monkeypatch.undo()
    assert seen == [False] * 4
    torch.testing.assert_close(_weights(res.encoder), _weights(ref.encoder), rtol=1e-4, atol=1e-5)


def test_deterministic_mode_sets_and_restores_the_cuda_backend_flags(monkeypatch):
    """The flags are process-wide: set for the run, restored after it (no GPU needed to check)."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    cuda = torch.device("cuda")
    with P._backend_settings(dataclasses.replace(TINY, deterministic=True), cuda):
        assert (cudnn.benchmark, cudnn.deterministic) == (False, True)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (cudnn.benchmark, cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled()) == before
    with P._backend_settings(TINY, cuda):  # default: autotuned convolutions (fixed shapes)
        assert cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert cudnn.benchmark == before[0]


@pytest.mark.parametrize("name", ["tiny_cnn", "small_cnn", "resnet18"])
def test_encoders_avoid_ops_without_a_deterministic_cuda_backward(name):
    enc = build_encoder(PretrainConfig(encoder=name, width=4, proj_dim=8))
    assert not any(isinstance(m, (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d))
                   for m in enc.modules())
    x = torch.randn(3, 8, 5, 5)
    torch.testing.assert_close(GlobalAvgPool()(x), torch.nn.AdaptiveAvgPool2d(1)(x).flatten(1))


def test_weak_loss_is_cross_entropy_without_nll_loss():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 5, generator=g)
    head = torch.nn.Linear(5, 2)
    y = torch.tensor([1, 0, 1])
    out = {"all": (h, None)}
    got = STRATEGIES["weak"].loss_fn(out, y, TINY, head)["cls"]
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(head(h), torch.cat([y, y])))

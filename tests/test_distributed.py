"""Data-parallel pretraining with 2 gloo processes on the CPU (the torchrun + DDP code path).

Checked against a single process that computes the same global batch: each process normalises
with its own BatchNorm statistics on the CPU, so the reference forwards each process's share
separately (per-process statistics emulated) and concatenates the projections.
Tolerance: float32, only the summation order differs (all-reduce of two partial gradients vs.
one backward): relative 1e-5 of the largest gradient entry.
"""
import os
import socket
import time
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from slamags_core import batching as B
from slamags_core import distributed as D
from slamags_core import pretrain as P
from slamags_core import surgery
from slamags_core.augment import Augmenter
from slamags_core.config import PretrainConfig
from slamags_core.encoders import build_encoder
from slamags_core.monitor import CollapseWarning
from slamags_core.strategies import STRATEGIES

WORLD = 2
CFG = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=12, proj_dim=8, steps=4,
                     batch_size=16, lr=0.05, warmup_steps=1, checkpoint_every=2, log_every=2,
                     monitor_size=8, seed=3)


def _pools():
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8),
            rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8))


def _flat_grads(params):
    return torch.cat([p.grad.reshape(-1) for p in params])


def _labels():
    """Instance labels of the positive pool (for the oracle ceiling): every third patch."""
    return (np.arange(24) % 3 == 0).astype(np.int64)


def _first_step_grads(method, ctx):
    """The gradient a process holds after step 0 (written by DDP or by the surgery)."""
    pos, neg = _pools()
    cpu = torch.device("cpu")
    labels = _labels() if STRATEGIES[method].instance_labels else None
    run = P._setup(method, CFG, cpu, B.as_pool(pos, "p", cpu), B.as_pool(neg, "n", cpu), ctx,
                   labels)
    P._step(run, 0)
    return _flat_grads(run.params)


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", CollapseWarning)
    ctx = D.setup("gloo")
    assert (ctx.rank, ctx.world_size) == (rank, WORLD)
    pos, neg = _pools()
    kw = dict(device="cpu", progress=False)
    result = {}
    straight = P.pretrain("slam_ags", pos, neg, CFG, out_dir=f"{out}/straight", **kw)
    result["straight"] = straight.encoder.state_dict()
    result["history"] = straight.history
    P.pretrain("slam_ags", pos, neg, CFG, out_dir=f"{out}/resumed", stop_after=2, **kw)
    resumed = P.pretrain("slam_ags", pos, neg, CFG, out_dir=f"{out}/resumed", **kw)  # rank 0's file
    result["resumed"] = resumed.encoder.state_dict()
    result["weak"] = P.pretrain("weak", pos, neg, CFG, **kw).encoder.state_dict()
    result["oracle"] = P.pretrain("oracle", pos, neg, CFG, pos_labels=_labels(),
                                  **kw).encoder.state_dict()
    for method in ("slam_ags", "simclr", "oracle"):
        result[f"grad_{method}"] = _first_step_grads(method, ctx)
    torch.save(result, f"{out}/rank{rank}.pt")
    D.teardown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    procs = mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 600
    while not procs.join(timeout=5):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.terminate()
            pytest.fail("the 2-process run did not finish in 600 s (deadlock?)")
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_identical_across_ranks(ranks):
    _, (r0, r1) = ranks
    for key in ("straight", "resumed", "weak", "oracle"):  # parameters and BatchNorm buffers
        assert _same(r0[key], r1[key]), key
    assert r0["history"] == r1["history"]  # every rank computes the same global losses


def test_resume_from_the_rank0_checkpoint_is_exact(ranks):
    out, (r0, _) = ranks
    assert _same(r0["straight"], r0["resumed"])
    assert sorted(p.name for p in (out / "resumed").iterdir()) == ["checkpoint.pt", "log.jsonl"]
    ck = torch.load(out / "resumed" / "checkpoint.pt", weights_only=True)
    assert ck["world_size"] == WORLD and ck["step"] == CFG.steps


def _reference_grads(method):
    """One process, the same global batch: each rank's share forwarded separately (its own
    BatchNorm statistics), views concatenated in the gathered layout, one global loss."""
    pos, neg = _pools()
    strategy = STRATEGIES[method]
    torch.manual_seed(CFG.seed)
    enc = build_encoder(CFG)
    params = list(enc.parameters())
    head, y = None, []
    if strategy.head:  # a patch classifier on h (oracle): the projector is not trained
        head = torch.nn.Linear(enc.feature_dim, 2)
        params = [p for n, p in enc.named_parameters() if not n.startswith("projector.")] + \
            list(head.parameters())
    sampler = B.BatchSampler(len(pos), len(neg), CFG.batch_size, CFG.seed, WORLD)
    parts = {g: [] for g in strategy.groups}
    for r in range(WORLD):
        pi, ni = sampler.shard(0, r)
        y.append(torch.cat([torch.from_numpy(_labels()[pi.numpy()]),  # this share's own labels
                            torch.zeros(len(ni), dtype=torch.long)]))
        p, n = torch.from_numpy(pos[pi.numpy()]), torch.from_numpy(neg[ni.numpy()])
        aug = Augmenter.from_config(CFG, generator=B.augmentation_generator(CFG.seed, 0, r))
        for g in strategy.groups:
            v1, v2 = aug(torch.cat([p, n])) if g == "all" else aug(p) if g == "pos" else \
                aug(n, center_first=strategy.center_neg)
            parts[g].append(enc(torch.cat([v1, v2])))
    out = {}
    for g, per_rank in parts.items():
        halves = [(t[: len(t) // 2], t[len(t) // 2:]) for t in (hz[1] for hz in per_rank)]
        h_halves = [(t[: len(t) // 2], t[len(t) // 2:]) for t in (hz[0] for hz in per_rank)]
        out[g] = (torch.cat([a for a, _ in h_halves] + [b for _, b in h_halves]),
                  torch.cat([a for a, _ in halves] + [b for _, b in halves]))
    losses = strategy.loss_fn(out, torch.cat(y) if strategy.instance_labels else None, CFG, head)
    if strategy.surgery is None:
        sum(losses.values()).backward()
        return _flat_grads(params)
    G = surgery.stacked_task_gradients(list(losses.values()), params)
    g, _ = surgery.combine(G, strategy.surgery, generator=B.surgery_generator(CFG.seed, 0))
    return g


@pytest.mark.parametrize("method", ["slam_ags", "simclr", "oracle"])
def test_combined_gradient_equals_one_process_on_the_global_batch(ranks, method):
    _, (r0, r1) = ranks
    ref = _reference_grads(method)
    assert torch.equal(r0[f"grad_{method}"], r1[f"grad_{method}"])
    tol = 1e-5 * float(ref.abs().max())
    torch.testing.assert_close(r0[f"grad_{method}"], ref, rtol=0, atol=tol)

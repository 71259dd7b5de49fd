"""Data-parallel pretraining over several processes (``torchrun`` + DistributedDataParallel).

One encoder is trained by N processes (usually one per GPU). Every process builds the same global
batch plan (:class:`slamags_core.batching.BatchSampler`) and takes its share of each step's
patches; it draws its own augmentations (a per-rank random stream) and shares one generator for
the surgery's random task order. What must be global stays global:

* the contrastive losses see every process's projections: :func:`gather_views` concatenates the
  views of all ranks with gradients, so NT-Xent keeps all ``2B - 1`` negatives of the global batch
  and each rank's backward sends its share of the gradient back to its own samples;
* SLAM's two task gradients are computed with ``torch.autograd.grad``, which bypasses DDP's
  gradient hooks, so they are averaged explicitly (:func:`all_reduce_mean_`, one call on the
  stacked ``(T, P)`` buffer) *before* PCGrad/AGS combines them: AGS sees the same two global task
  gradients a single process with the whole batch would see;
* the other strategies take one ``backward()`` through DistributedDataParallel as usual;
* BatchNorm: ``SyncBatchNorm`` on CUDA (global batch statistics); on the CPU (gloo, tests) each
  process normalises with its own statistics and the running buffers are taken from rank 0
  (:func:`broadcast_buffers`, DDP's convention). See ``docs/scale.md``.

Rank 0 alone writes checkpoints and logs; every rank can resume from them.

Usage (the launcher sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``)::

    torchrun --nproc_per_node=4 -m slamags_core pretrain --preset paper --method slam_ags
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

DEFAULT_TIMEOUT_S = 2 * 3600  # rank 0 may embed and train MIL models while the others wait


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 = the main process, which writes files).
        world_size: number of processes; 1 = no distribution.
        local_rank: rank on this machine (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE = DistContext()


def current() -> DistContext:
    """The context of the initialised default process group, else :data:`SINGLE`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistContext(dist.get_rank(), dist.get_world_size(), local)


def setup(backend: str | None = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group described by the launcher's environment (``torchrun``).

    Without ``WORLD_SIZE`` > 1 in the environment nothing is initialised and :data:`SINGLE` is
    returned, so the same command runs with or without ``torchrun``.

    Args:
        backend: ``"nccl"`` (default with CUDA) or ``"gloo"`` (default otherwise).
        timeout_s: how long a collective may wait for the slowest rank.
    """
    if dist.is_initialized():
        return current()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return current()


def teardown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Pin an un-indexed CUDA device to one GPU: ``cuda:LOCAL_RANK`` in a distributed run,
    else the current one (so tensors made on "cuda" compare equal to the run's device)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank if ctx.enabled else torch.cuda.current_device())
    return device


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for one process)."""
    if ctx.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(ctx: DistContext):
    """Run the body on rank 0 first, then on the other ranks (e.g. build a cache, then read it)."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 with a gradient: each rank gets back the sum over ranks of the
    gradient of its own rows (every rank computes the same loss on the gathered tensor)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, world: int, rank: int, group) -> torch.Tensor:
        ctx.world, ctx.rank, ctx.group, ctx.n = world, rank, group, x.shape[0]
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        _all_gather(out, x.contiguous(), group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)  # sum of every rank's d(loss)/d(rows)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n], None, None, None


def _all_gather(out: torch.Tensor, x: torch.Tensor, group) -> None:
    # all_gather_single replaces all_gather_into_tensor in recent PyTorch versions
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, x, group=group)


def gather_rows(x: torch.Tensor, ctx: DistContext, group=None) -> torch.Tensor:
    """``(n, ...)`` per rank -> ``(world * n, ...)`` in rank order, differentiable.

    Every rank must pass the same ``n``. The backward returns to each rank
    ``sum_r dL_r/d(its rows)``: when every rank computes the same loss ``L`` on the gathered
    tensor that is ``world * dL/d(rows)``, which DDP's (and :func:`all_reduce_mean_`'s) division
    by ``world`` turns into exactly the single-process gradient.
    """
    if not ctx.enabled:
        return x
    return _GatherRows.apply(x, ctx.world_size, ctx.rank, group)


def gather_views(x: torch.Tensor, ctx: DistContext, group=None) -> torch.Tensor:
    """Both views of a group, ``(2n, D)`` = ``[view 1; view 2]`` per rank, gathered into the
    global layout ``(2 N, D)`` = ``[view 1 of every rank; view 2 of every rank]``."""
    if not ctx.enabled:
        return x
    n = x.shape[0] // 2
    return torch.cat([gather_rows(x[:n], ctx, group), gather_rows(x[n:], ctx, group)])


def all_reduce_mean_(t: torch.Tensor, ctx: DistContext, group=None) -> torch.Tensor:
    """In-place mean over ranks (one collective); returns ``t``."""
    if ctx.enabled:
        dist.all_reduce(t, group=group)
        t.div_(ctx.world_size)
    return t


def broadcast_buffers(module: nn.Module, ctx: DistContext, group=None) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, one call per dtype."""
    if not ctx.enabled:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for b in module.buffers():
        by_dtype.setdefault(b.dtype, []).append(b)
    for bufs in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in bufs])
        dist.broadcast(flat, src=0, group=group)
        for b, part in zip(bufs, torch.split(flat, [b.numel() for b in bufs])):
            b.copy_(part.view_as(b))


def new_group(ctx: DistContext):
    """A process group of all ranks for the loss's gathers, apart from DDP's gradient traffic
    (collective on every rank); ``None`` for one process."""
    return dist.new_group() if ctx.enabled else None


def destroy_group(group) -> None:
    """Release a group made by :func:`new_group` (its communicators hold device memory)."""
    if group is not None:
        dist.destroy_process_group(group)

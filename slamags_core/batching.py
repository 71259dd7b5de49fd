"""What every step trains on: the batch plan and where the pools live.

The pretraining budget is a number of optimiser steps (:mod:`slamags_core.pretrain`). Every step
takes a fixed share of each pool, in proportion to the pool sizes (:func:`batch_shares`), from
successive shuffled passes over that pool (:class:`BatchSampler`): every patch once per pass, no
patch twice in a step, batch shapes that never change. Step ``s``'s patches, augmentations
(:func:`augmentation_generator`, one stream per process) and surgery order
(:func:`surgery_generator`, shared) are pure functions of ``(seed, s)``, which makes a resumed run
continue exactly; in a distributed run every process computes the same plan and takes its slice
(:meth:`BatchSampler.shard`).

The pools (:class:`Pools`) are arrays, tensors or :class:`~slamags_core.bags.PatchPool` views of a
memory-mapped bag set. They are copied to the accelerator once when they fit
(:func:`pools_fit`: at most half of the free GPU memory that ``torch.cuda.mem_get_info`` reports);
otherwise a background thread reads each step's patches one step ahead into pinned memory and
the copy to the device does not block.
"""
from __future__ import annotations

import math
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from slamags_core.bags import PatchPool
from slamags_core.validation import check_int

POOL_FREE_FRACTION = 0.5        # pools go to the GPU when they need <= this share of its free memory
MPS_POOL_MAX_BYTES = 4 * 2**30  # MPS cannot report free memory: a fixed limit
PLACEMENTS: tuple[str, ...] = ("auto", "device", "host")
POOL, AUGMENTATION, SURGERY, HELD = 0, 1, 2, 3  # random streams (part of every seed key)


def batch_shares(n_pos: int, n_neg: int, batch_size: int, world_size: int = 1) -> tuple[int, int]:
    """Positive and negative patches of every step, in proportion to the pool sizes.

    Each share is a multiple of ``world_size`` (every process gets the same number) and >= 2
    (the contrastive losses need two patches). A pool smaller than its share contributes all
    its patches (a step never repeats a patch), so the step is then smaller than batch_size.

    Raises:
        ValueError: for a batch_size that is too small or not a multiple of ``world_size``, or a
            pool with fewer than 2 patches (per process).
    """
    n_pos, n_neg = check_int(n_pos, "n_pos", ge=0), check_int(n_neg, "n_neg", ge=0)
    batch_size = check_int(batch_size, "batch_size", ge=4)
    world_size = check_int(world_size, "world_size", ge=1)
    lo = world_size * math.ceil(2 / world_size)  # smallest multiple of world_size >= 2
    if batch_size % world_size or batch_size < 2 * lo:
        raise ValueError(f"batch_size must be a multiple of the {world_size} process(es) and "
                         f">= {2 * lo}, got {batch_size}")
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"both pools need patches, got {n_pos} positive / {n_neg} negative")
    b_pos = math.floor(batch_size * n_pos / (n_pos + n_neg) / world_size + 0.5) * world_size
    b_pos = min(max(b_pos, lo), batch_size - lo)
    b_neg = batch_size - b_pos
    # a step never repeats a patch: a pool smaller than its share gives all it has (per process)
    b_pos = min(b_pos, n_pos // world_size * world_size)
    b_neg = min(b_neg, n_neg // world_size * world_size)
    if min(b_pos, b_neg) < lo:
        raise ValueError(f"pools of {n_pos} positive / {n_neg} negative patches are too small: "
                         f"each step needs >= {lo} patches of each pool ({world_size} "
                         f"process(es)); provide more patches")
    return b_pos, b_neg


def seeded_generator(*key: int) -> torch.Generator:
    """CPU generator seeded from a tuple of non-negative ints (via ``np.random.SeedSequence``)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def augmentation_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of step ``step``'s augmentations on process ``rank``."""
    return seeded_generator(seed, step, AUGMENTATION, rank)


def surgery_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s random task order (shared by every process)."""
    return seeded_generator(seed, step, SURGERY)


class BatchSampler:
    """The patches of every step: fixed shares of the two pools from shuffled passes.

    Pool k is read as a sequence of passes, pass p a permutation of its indices seeded by
    ``(seed, k, p)``; a pass holds ``n_k // b_k`` steps of ``b_k`` patches (the few patches left
    over differ from pass to pass). Step s's patches are a pure function of ``(seed, s)``, so a
    resumed run continues exactly, and the same on every process of a distributed run, each of
    which takes a contiguous ``1 / world_size`` of both shares (:meth:`shard`).

    Args:
        n_pos, n_neg: pool sizes.
        batch_size: patches per step (all processes together).
        seed: the run's seed.
        world_size: number of processes sharing every step.
    """

    def __init__(self, n_pos: int, n_neg: int, batch_size: int, seed: int, world_size: int = 1):
        self.sizes = (int(n_pos), int(n_neg))
        self.shares = batch_shares(n_pos, n_neg, batch_size, world_size)
        self.seed, self.world_size = int(seed), int(world_size)
        self._perms: dict[tuple[int, int], torch.Tensor] = {}

    def _perm(self, k: int, p: int) -> torch.Tensor:
        if (k, p) not in self._perms:
            if len(self._perms) >= 4:
                self._perms.clear()  # only the current passes are needed
            self._perms[(k, p)] = torch.randperm(self.sizes[k],
                                                 generator=seeded_generator(self.seed, POOL, k, p))
        return self._perms[(k, p)]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global pool indices of step ``step``: ``(pos (b_pos,), neg (b_neg,))`` int64."""
        out = []
        for k in (0, 1):
            b = self.shares[k]
            p, j = divmod(int(step), self.sizes[k] // b)
            out.append(self._perm(k, p)[j * b:(j + 1) * b])
        return out[0], out[1]

    def shard(self, step: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Process ``rank``'s share of step ``step``: a contiguous slice of each pool's part."""
        pos, neg = self.batch(step)
        w = self.world_size
        return pos.view(w, -1)[rank], neg.view(w, -1)[rank]


def as_pool(x, name: str, device: torch.device) -> PatchPool | torch.Tensor:
    """A pool as :class:`Pools` takes it.

    Args:
        x: a :class:`PatchPool` (kept as it is), a uint8 ``(N, H, W, 3)`` array, or a tensor of
            that shape (kept when it is already on the accelerator ``device``).
        name: the argument's name in error messages.
        device: the training device.

    Returns:
        A :class:`PatchPool` over host storage, or a uint8 tensor already on ``device``.

    Raises:
        ValueError: when ``x`` is not uint8 ``(N, H, W, 3)``.
    """
    if isinstance(x, PatchPool):
        return x
    if isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"{name} must be uint8 (N, H, W, 3); got {x.dtype} {tuple(x.shape)}")
        if x.device == device and device.type != "cpu":
            return x
        x = x.cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 (N, H, W, 3); got {arr.dtype} {arr.shape}")
    return PatchPool(arr, np.arange(len(arr)))


def pools_fit(nbytes: int, device: torch.device, placement: str) -> bool:
    """Whether the pools are copied to ``device``.

    Args:
        nbytes: the size of both pools.
        device: the training device.
        placement: "device" (always copy; on the CPU: load them into one tensor), "host"
            (never) or "auto" (CUDA: when they need at most :data:`POOL_FREE_FRACTION` of the
            free memory; MPS: at most :data:`MPS_POOL_MAX_BYTES`; CPU: read from storage).
    """
    if placement == "device":
        return True
    if device.type == "cpu" or placement == "host":
        return False
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= POOL_FREE_FRACTION * free
    return nbytes <= MPS_POOL_MAX_BYTES


def _upload(pool: PatchPool, device: torch.device, chunk_bytes: int = 256 * 2**20) -> torch.Tensor:
    """Copy a pool to the device in chunks (host memory stays bounded for memory-mapped sets)."""
    out = torch.empty(pool.shape, dtype=torch.uint8, device=device)
    step = max(1, chunk_bytes // max(1, pool.nbytes // max(1, len(pool))))
    for i in range(0, len(pool), step):
        part = torch.from_numpy(pool.read(np.arange(i, min(i + step, len(pool)))))
        out[i:i + len(part)].copy_(part)
    return out


class Pools:
    """The two pools as the loop sees them: uint8 ``(B, H, W, 3)`` batches on the device.

    Either both pools are copied to the device once (when given as device tensors, or when
    :func:`pools_fit`) and every step is an ``index_select`` there, or they stay in their host
    storage and a background thread reads the next step's patches into (pinned) memory while
    the current step trains.

    Args:
        pos, neg: the pools, as :func:`as_pool` returns them.
        device: the training device.
        placement: one of :data:`PLACEMENTS` (see :func:`pools_fit`).
    """

    def __init__(self, pos, neg, device: torch.device, placement: str):
        self.device = device
        self.host = (pos, neg)
        self.sizes = (len(pos), len(neg))
        nbytes = sum(p.nbytes for p in self.host if isinstance(p, PatchPool))
        if all(isinstance(p, torch.Tensor) for p in self.host):
            self.dev = self.host
        elif any(isinstance(p, torch.Tensor) for p in self.host) or \
                pools_fit(nbytes, device, placement):  # one pool given on the device: both
            self.dev = tuple(p if isinstance(p, torch.Tensor) else _upload(p, device)
                             for p in self.host)
        else:
            self.dev = None
        self._executor: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future] = {}

    @property
    def on_device(self) -> bool:
        """Whether both pools live on the device."""
        return self.dev is not None

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return x.to(self.device, non_blocking=True)  # x is pinned
        return x.to(self.device)

    def read(self, k: int, positions: torch.Tensor) -> torch.Tensor:
        """Patches ``positions`` of pool ``k`` on the device (synchronous; the monitor's sample)."""
        if self.dev is not None:
            return self.dev[k].index_select(0, positions.to(self.device))
        return torch.from_numpy(self.host[k].read(positions.numpy())).to(self.device)

    def _read_host(self, pi: torch.Tensor, ni: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for pool, idx in zip(self.host, (pi, ni)):
            buf = torch.empty((len(idx), *pool.shape[1:]), dtype=torch.uint8,
                              pin_memory=self.device.type == "cuda")
            pool.read(idx.numpy(), out=buf.numpy())  # pages of a memory-mapped set read here
            out.append(buf)
        return out[0], out[1]

    def batch(self, step: int, pi: torch.Tensor, ni: torch.Tensor,
              next_step: tuple[int, torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
        """Step ``step``'s patches ``(pos, neg)`` on the device; start reading ``next_step``."""
        if self.dev is not None:
            idx = torch.cat([pi, ni])
            idx = self._to_device(idx.pin_memory() if self.device.type == "cuda" else idx)
            return (self.dev[0].index_select(0, idx[:len(pi)]),
                    self.dev[1].index_select(0, idx[len(pi):]))
        fut = self._ahead.pop(step, None)
        host = fut.result() if fut is not None else self._read_host(pi, ni)
        if next_step is not None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="pool-prefetch")
            self._ahead[next_step[0]] = self._executor.submit(self._read_host, *next_step[1:])
        return tuple(self._to_device(x) for x in host)

    def close(self) -> None:
        """Stop the read-ahead thread (pending reads are cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor, self._ahead = None, {}

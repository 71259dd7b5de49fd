"""One pretraining loop for every strategy: random, SimCLR, weak, SupCon and SLAM (sum/PCGrad/AGS).

SLAM-AGS (Acerbis et al., ISBI 2026) trains an encoder with two tasks per step: NT-Xent
(Chen et al., SimCLR, ICML 2020) over two views of patches from slide-POSITIVE bags, and the
similarity (alignment) loss over two views of patches from slide-NEGATIVE bags; the two task
gradients are combined by plain sum, PCGrad (Yu et al., NeurIPS 2020) or AGS (PCGrad + rescale to
the norm of the plain sum). The baselines share the same loop and the same batches; a strategy
is one row of :data:`slamags_core.strategies.STRATEGIES` (which forwards to run, which task
losses, how to combine); checkpoint files are read and checked by :mod:`slamags_core.checkpoint`.

Budget and batching: ``cfg.steps`` optimiser steps, whatever the size of the pools; what every
step trains on, and where the pools live (on the GPU, or read one step ahead from a memory-mapped
bag set), is :mod:`slamags_core.batching`. For the SLAM methods the positive and negative patches
are forwarded separately (both views of one pool in one forward), so each task's backward
traverses only its own graph and the per-task gradients cost no more than the backward of the
sum. (A single forward of the concatenated batch would couple the two tasks through BatchNorm
statistics and make each backward traverse everything.)

Randomness: step ``s``'s patches, augmentations and surgery order are functions of
``(seed, s)`` and the initial weights of ``seed``. Hence a run resumed at any checkpoint continues
exactly and, on the CPU, the same seed gives the same weights bit for bit (on CUDA with
``cfg.deterministic``).

Synchronisation: losses and surgery statistics stay on the device and are read in one transfer
every ``cfg.log_every`` steps and before every checkpoint, where the NaN/inf check happens. A
checkpoint (and the collapse monitor) every ``cfg.checkpoint_every`` steps.

Several processes (``torchrun``): see :mod:`slamags_core.distributed`.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from slamags_core import distributed as D
from slamags_core import surgery
from slamags_core.augment import Augmenter
from slamags_core.batching import (HELD, PLACEMENTS, BatchSampler, Pools, as_pool,
                                   augmentation_generator, seeded_generator, surgery_generator)
from slamags_core.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, LOG_NAME,
                                     check_compatible, data_fingerprint, load_checkpoint)
from slamags_core.config import PretrainConfig
from slamags_core.encoders import Encoder, autocast, build_encoder, uses_amp
from slamags_core.monitor import collapse_report, warn_if_collapsed
from slamags_core.strategies import ENGINE_METHODS, STRATEGIES, Strategy
from slamags_core.utils import atomic_torch_save, atomic_write_text, get_device
from slamags_core.validation import check_float, check_int


class NonFiniteLossError(RuntimeError):
    """A task loss became NaN or infinite; the message names the step and the strategy."""


# ----------------------------------------------------------------------------------------------
# Schedule, optimiser, configuration
# ----------------------------------------------------------------------------------------------

def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))


def _optimizer(params: list[nn.Parameter], cfg: PretrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; allowed: ('sgd', 'adamw')")


def _check_config(method: str, cfg: PretrainConfig) -> PretrainConfig:
    """``cfg`` with every number validated (ValueError naming it) and made a plain int / float."""
    if method not in STRATEGIES:
        raise ValueError(f"unknown method {method!r}; allowed: {ENGINE_METHODS}")
    if cfg.embedding not in ("h", "z"):
        raise ValueError(f"embedding must be 'h' or 'z', got {cfg.embedding!r}")
    if cfg.pool_placement not in PLACEMENTS:
        raise ValueError(f"pool_placement must be one of {PLACEMENTS}, got {cfg.pool_placement!r}")
    steps = check_int(cfg.steps, "steps", ge=1)
    smallest = {"width": 1, "crop_size": 1, "proj_dim": 1, "batch_size": 4, "monitor_size": 2,
                "checkpoint_every": 1, "log_every": 1,
                "seed": 0}  # the other integer fields and their smallest allowed value
    return dataclasses.replace(
        cfg, steps=steps,
        warmup_steps=check_int(cfg.warmup_steps, "warmup_steps", ge=0, le=steps),
        **{f: check_int(getattr(cfg, f), f, ge=low) for f, low in smallest.items()},
        lr=check_float(cfg.lr, "lr", gt=0),
        momentum=check_float(cfg.momentum, "momentum", ge=0),
        weight_decay=check_float(cfg.weight_decay, "weight_decay", ge=0),
        temperature=check_float(cfg.temperature, "temperature", gt=0))


# ----------------------------------------------------------------------------------------------
# Run state (built inside pretrain(), never global)
# ----------------------------------------------------------------------------------------------

@dataclass
class PretrainResult:
    """What :func:`pretrain` returns.

    Attributes:
        encoder: the trained encoder, in eval mode.
        method: the strategy name.
        history: one dict per step: ``step, lr, loss`` and ``loss_<task>`` per task
            (``loss_con``, ``loss_sim`` for SLAM), plus the surgery stats (``cosine``,
            ``conflict``, ``projected``, ``norm_<task>``, ``norm_sum``, ``norm_surgery``,
            ``norm_out``) for slam_* methods.
        summaries: one dict per checkpoint (step 0 = initialisation): ``step``, ``epochs``
            (passes over the pools), mean losses and stats of the period, timing and the
            collapse monitor (``h_std``, ``h_erank``, ``z_std``, ... see :mod:`monitor`). In a
            distributed run the monitor is computed on rank 0 only.
        checkpoint: path of the last checkpoint, or ``None`` without ``out_dir``.
        head: the weak strategy's slide-label head, else ``None``.
    """

    encoder: Encoder
    method: str
    history: list[dict] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    head: nn.Module | None = None


class _Net(nn.Module):
    """The trained modules; one call forwards every group of a step (one DDP forward per step)."""

    def __init__(self, encoder: Encoder, head: nn.Module | None):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, xs: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.encoder(x) for x in xs]


@dataclass
class _Run:
    method: str
    strategy: Strategy
    cfg: PretrainConfig
    device: torch.device
    ctx: D.DistContext
    encoder: Encoder
    head: nn.Module | None
    net: Callable               # _Net, DDP(_Net) or compiled: all groups, one backward
    fwd: Callable               # the encoder (or compiled): one group, per-task gradients
    per_task: bool              # task gradients by autograd.grad + surgery.combine
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    aug: Augmenter
    sampler: BatchSampler | None
    pools: Pools
    held: torch.Tensor          # (m, H, W, 3) uint8 on the device, the fixed monitor sample
    group: object               # process group of the loss gathers (None for one process)
    amp: bool
    channels_last: bool
    sync_bn: bool
    pos_labels: torch.Tensor | None = None  # (n_pos,) instance labels on the device (oracle)


def _held_sample(pools: Pools, cfg: PretrainConfig) -> torch.Tensor:
    """Fixed monitor sample: ``monitor_size`` patches drawn in proportion from the two pools."""
    n_pos, n_neg = pools.sizes
    g = seeded_generator(cfg.seed, HELD)
    m = min(cfg.monitor_size, n_pos + n_neg)
    k_pos = min(n_pos, round(m * n_pos / (n_pos + n_neg)))
    k_neg = min(n_neg, m - k_pos)
    ip = torch.randperm(n_pos, generator=g)[:k_pos]
    ineg = torch.randperm(n_neg, generator=g)[:k_neg]
    return torch.cat([pools.read(0, ip), pools.read(1, ineg)])


def _unused_parameters(net: _Net, strategy: Strategy, cfg: PretrainConfig) -> list[str]:
    """Parameters the strategy's losses never reach (e.g. weak's projection head), found by one
    backward of a copy of the modules on a tiny random batch (CPU, nothing of the run changes).

    They are frozen, so DDP does not wait for gradients that never come; an optimiser skips
    parameters without a gradient anyway, so a single process trains exactly as before.
    """
    probe = copy.deepcopy(net).cpu().train()
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(4, 3, cfg.crop_size, cfg.crop_size, generator=g) for _ in strategy.groups]
    out = dict(zip(strategy.groups, probe(xs)))  # 2 patches x 2 views per group
    losses = strategy.loss_fn(out, torch.tensor([1, 0]), cfg, probe.head)
    named = [(n, p) for n, p in probe.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(sum(losses.values()), [p for _, p in named], allow_unused=True)
    return [n for (n, _), gr in zip(named, grads) if gr is None]


def _compile(module, cfg: PretrainConfig, device: torch.device):
    """``torch.compile`` when asked for and on CUDA (tests patch this to compile on the CPU)."""
    return torch.compile(module) if cfg.compile and device.type == "cuda" else module


def _setup(method: str, cfg: PretrainConfig, device: torch.device, pos, neg,
           ctx: D.DistContext = D.SINGLE, pos_labels: np.ndarray | None = None) -> _Run:
    strategy = STRATEGIES[method]
    with torch.random.fork_rng(devices=[]):  # same init for every method of one seed
        torch.manual_seed(cfg.seed)
        encoder = build_encoder(cfg)
        head = nn.Linear(encoder.feature_dim, 2) if strategy.head else None
    if strategy.setup is not None:  # state built from the initial encoder (deep_svdd's centre)
        head = strategy.setup(encoder, neg, cfg, device)
    net = _Net(encoder, head)
    trains = strategy.loss_fn is not None
    per_task = strategy.surgery is not None and (strategy.surgery != "sum" or cfg.surgery_stats)
    if trains and not per_task:
        for name in _unused_parameters(net, strategy, cfg):
            net.get_parameter(name).requires_grad_(False)
    sync_bn = ctx.enabled and device.type == "cuda"
    if sync_bn:  # global batch statistics (see docs/scale.md)
        net.encoder = encoder = nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    net.to(device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = _optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    sampler = BatchSampler(len(pos), len(neg), cfg.batch_size, cfg.seed, ctx.world_size) \
        if trains else None
    pools = Pools(pos, neg, device, cfg.pool_placement)
    single = net
    if ctx.enabled and trains and not per_task:
        single = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    return _Run(method, strategy, cfg, device, ctx, encoder, head, _compile(single, cfg, device),
                _compile(encoder, cfg, device), per_task, params, opt, sched,
                Augmenter.from_config(cfg, device), sampler, pools, _held_sample(pools, cfg),
                D.new_group(ctx) if trains else None, uses_amp(cfg, device), channels_last,
                sync_bn, torch.from_numpy(pos_labels).to(device) if pos_labels is not None else None)


@contextlib.contextmanager
def _backend_settings(cfg: PretrainConfig, device: torch.device):
    """cuDNN autotuning, or the deterministic mode, on CUDA for the duration of a run."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    if cfg.deterministic:
        # cuBLAS needs a fixed workspace for reproducible matmuls; it reads this when its handle
        # is created, so set it before CUDA starts (the CLI does) to be sure.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        cudnn.benchmark, cudnn.deterministic = False, True
        torch.use_deterministic_algorithms(True)
    else:
        cudnn.benchmark = True  # fixed batch shapes: autotuned convolutions pay off
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2])


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------

def _slide_labels(n_pos: int, n_neg: int, world: int, device: torch.device) -> torch.Tensor:
    """Slide labels of the "all" group in the gathered layout, made on the device  # (B,)"""
    one = torch.cat([torch.ones(n_pos, dtype=torch.long, device=device),
                     torch.zeros(n_neg, dtype=torch.long, device=device)])
    return one.repeat(world)


def _instance_targets(run: _Run, step: int, n_neg: int) -> torch.Tensor:
    """Oracle ceiling: the sampled cells' own labels in the gathered layout  # (B,)

    The positive patches' labels are looked up through the very indices the step's batch was
    read with (:meth:`BatchSampler.batch`); negative-pool cells are 0. Every process computes
    the loss on the gathered global batch, so each needs every process's share of the labels:
    all of them know the step's plan, so no labels travel.
    """
    w = run.ctx.world_size
    shares = run.sampler.batch(step)[0].view(w, -1)  # row r = process r's positive indices
    y = _slide_labels(shares.shape[1], n_neg, w, run.device).view(w, -1)
    y[:, :shares.shape[1]] = run.pos_labels[shares.to(run.device)]
    return y.view(-1)


def _stat_tensors(stats: surgery.SurgeryStats, tasks: list[str]) -> dict[str, torch.Tensor]:
    """The surgery statistics as 0-d device tensors (read later, with the losses)."""
    cos = stats.cosine
    T = cos.shape[0]
    off = cos[~torch.eye(T, dtype=torch.bool, device=cos.device)]
    out = {"cosine": cos[0, 1] if T == 2 else off.min(), "conflict": (off < 0).any(),
           "projected": stats.projected.any()}
    for i, t in enumerate(tasks):
        out[f"projected_{t}"], out[f"norm_{t}"] = stats.projected[i], stats.task_norms[i]
    out.update(norm_sum=stats.norm_sum, norm_surgery=stats.norm_surgery, norm_out=stats.norm_out)
    return out


def _per_task_backward(run: _Run, losses: dict[str, torch.Tensor], gen: torch.Generator
                       ) -> dict[str, torch.Tensor]:
    """Task gradients -> mean over processes -> surgery -> ``.grad``; returns the stats."""
    # SLAM's task losses live on disjoint graphs (one forward per pool): free each graph after
    # its backward. A strategy with fewer groups than tasks shares a graph and must retain it.
    disjoint = len(run.strategy.groups) >= len(losses)
    G = surgery.stacked_task_gradients(list(losses.values()), run.params,
                                       retain_graph=False if disjoint else None)  # (T, P)
    D.all_reduce_mean_(G, run.ctx)  # autograd.grad bypasses DDP: average before combining
    g, stats = surgery.combine(G, run.strategy.surgery, generator=gen)
    surgery.assign_gradients(run.params, g)
    return _stat_tensors(stats, list(losses))


def _step(run: _Run, step: int, end: int | None = None) -> tuple[int, dict, list[str], torch.Tensor]:
    """Views -> forward -> task losses -> (surgery) -> optimiser step.

    Returns ``(step, host values, keys, device vector)``: the losses and statistics stay on the
    device until :func:`_flush` reads many steps at once.
    """
    cfg, ctx = run.cfg, run.ctx
    pi, ni = run.sampler.shard(step, ctx.rank)
    ahead = None
    if end is not None and step + 1 < end:
        ahead = (step + 1, *run.sampler.shard(step + 1, ctx.rank))
    pos, neg = run.pools.batch(step, pi, ni, ahead)
    run.aug.generator = augmentation_generator(cfg.seed, step, ctx.rank)  # per-rank stream
    xs = []
    for g in run.strategy.groups:
        if g == "all":
            v1, v2 = run.aug(torch.cat([pos, neg]))
        elif g == "pos":
            v1, v2 = run.aug(pos)
        else:
            v1, v2 = run.aug(neg, center_first=run.strategy.center_neg)
        x = torch.cat([v1, v2])  # (2n, 3, c, c)
        xs.append(x.contiguous(memory_format=torch.channels_last) if run.channels_last else x)
    with autocast(run.amp):
        outs = [run.fwd(x) for x in xs] if run.per_task else run.net(xs)
    out = {g: tuple(D.gather_views(t, ctx, run.group) for t in o)  # global batch on every rank
           for g, o in zip(run.strategy.groups, outs)}
    if run.strategy.instance_labels:  # oracle ceiling: the cells' own labels, not slide labels
        y = _instance_targets(run, step, len(neg))
    elif "all" in run.strategy.groups:
        y = _slide_labels(len(pos), len(neg), ctx.world_size, run.device)
    else:
        y = None
    losses = run.strategy.loss_fn(out, y, cfg, run.head)
    host = {"lr": run.opt.param_groups[0]["lr"]}
    vals = {f"loss_{k}": v.detach() for k, v in losses.items()}
    if run.per_task:
        vals.update(_per_task_backward(run, losses, surgery_generator(cfg.seed, step)))
    else:
        run.opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
    run.opt.step()
    run.sched.step()
    if run.per_task and ctx.enabled:
        D.broadcast_buffers(run.encoder, ctx)  # DDP's forward would have done this
    keys = list(vals)
    return step, host, keys, torch.stack([v.to(torch.float64) for v in vals.values()])


def _flush(pending: list, run: _Run, last_good: str) -> list[dict]:
    """Read the pending steps' values in one transfer; raise on a non-finite loss."""
    if not pending:
        return []
    table = torch.stack([p[3] for p in pending]).cpu().tolist()  # the one host sync
    records = []
    for (step, host, keys, _), row in zip(pending, table):
        rec: dict = {"step": step, **host}
        for k, x in zip(keys, row):
            rec[k] = bool(x) if k == "conflict" or k.startswith("projected") else x
        rec["loss"] = sum(rec[k] for k in keys if k.startswith("loss_"))
        bad = {k: v for k, v in rec.items() if k.startswith("loss") and not math.isfinite(v)}
        if bad:
            raise NonFiniteLossError(f"non-finite loss {bad} at step {step} of strategy "
                                     f"{run.method!r} (last good checkpoint: {last_good})")
        records.append(rec)
    return records


@torch.no_grad()
def _monitor(run: _Run) -> dict:
    """Collapse diagnostics of ``h`` and ``z`` on the held sample (eval mode, centre crops)."""
    was_training = run.encoder.training
    run.encoder.eval()
    H, Z = [], []
    for chunk in torch.split(run.held, 512):
        x = run.aug.center_view(chunk)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(run.amp):
            h, z = run.encoder(x)
        H.append(h.float().cpu())
        Z.append(z.float().cpu())
    run.encoder.train(was_training)
    return {**collapse_report(torch.cat(H), prefix="h_"),
            **collapse_report(torch.cat(Z), prefix="z_")}


# ----------------------------------------------------------------------------------------------
# Checkpoints, logs, summaries
# ----------------------------------------------------------------------------------------------

def _summary(run: _Run, step: int, records: list[dict], seconds: float) -> dict:
    n = sum(run.pools.sizes)
    out: dict = {"step": step, "epochs": step * run.cfg.batch_size / n}
    if records:
        for k in records[0]:
            if k.startswith("loss") or k.startswith("norm_") or k == "cosine":
                out[k] = float(np.mean([r[k] for r in records]))
        if "conflict" in records[0]:
            out["conflict_frac"] = float(np.mean([r["conflict"] for r in records]))
        out.update(time_s=seconds, patches_per_s=len(records) * run.cfg.batch_size / seconds)
    if run.ctx.is_main:
        out.update(_monitor(run))
    return out


def _state(run: _Run, step: int, history: list[dict], summaries: list[dict], data: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(run.cfg),
            "method": run.method, "step": step, "data": data,
            "model": run.encoder.state_dict(),
            "head": run.head.state_dict() if run.head is not None else {},
            "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
            "history": history, "summaries": summaries, "world_size": run.ctx.world_size,
            "torch_version": str(torch.__version__)}


def _restore(run: _Run, ckpt: dict, path: Path) -> tuple[list[dict], list[dict], int]:
    run.encoder.load_state_dict(ckpt["model"])
    if run.head is not None:
        run.head.load_state_dict(ckpt["head"])
    run.opt.load_state_dict(ckpt["optimizer"])
    run.sched.load_state_dict(ckpt["scheduler"])
    if ckpt.get("world_size", 1) != run.ctx.world_size and run.ctx.is_main:
        warnings.warn(f"{path} was written by {ckpt.get('world_size', 1)} process(es), resumed "
                      f"by {run.ctx.world_size}: training continues correctly, but the "
                      f"augmentations differ from an uninterrupted run", stacklevel=3)
    return list(ckpt["history"]), list(ckpt["summaries"]), int(ckpt["step"])


def _log_lines(records: list[dict], kind: str) -> str:
    return "".join(json.dumps({"type": kind, **r}) + "\n" for r in records)


def _begin(run: _Run, ckpt: Path | None, resume: bool, data: dict
           ) -> tuple[list[dict], list[dict], int]:
    """Restore ``(history, summaries, start_step)`` from the checkpoint, or start afresh."""
    main = run.ctx.is_main
    log = ckpt.with_name(LOG_NAME) if ckpt is not None else None
    exists = ckpt is not None and resume and ckpt.exists()
    D.barrier(run.ctx)  # every rank has decided before rank 0 writes anything below
    if exists:
        saved = load_checkpoint(ckpt, run.device)
        check_compatible(saved, run.cfg, run.method, data, ckpt)
        history, summaries, start = _restore(run, saved, ckpt)
        if main:
            atomic_write_text(_log_lines(history, "step") + _log_lines(summaries, "summary"), log)
        return history, summaries, start
    summaries = [{"step": 0, "epochs": 0.0, **(_monitor(run) if main else {})}]
    if ckpt is not None and main:
        atomic_write_text(_log_lines(summaries, "summary"), log)
        if run.strategy.loss_fn is None:  # random: keep the initial encoder for the next stages
            atomic_torch_save(_state(run, 0, [], summaries, data), ckpt)
    D.barrier(run.ctx)
    return [], summaries, 0


def _save(run: _Run, ckpt: Path, step: int, history: list[dict], summaries: list[dict],
          data: dict, new: int) -> None:
    """Atomic checkpoint, then append the period's step records and summary to the log."""
    atomic_torch_save(_state(run, step, history, summaries, data), ckpt)
    with open(ckpt.with_name(LOG_NAME), "a") as f:
        f.write(_log_lines(history[len(history) - new:], "step")
                + _log_lines(summaries[-1:], "summary"))


def _plain_encoder(run: _Run) -> Encoder:
    """The trained encoder with ordinary BatchNorm (a SyncBatchNorm copy is converted back)."""
    if not run.sync_bn:
        return run.encoder
    plain = build_encoder(run.cfg)
    plain.load_state_dict(run.encoder.state_dict())
    plain.to(run.device)
    return plain.to(memory_format=torch.channels_last) if run.channels_last else plain


def _instance_labels(labels, pos, method: str) -> tuple[np.ndarray, str]:
    """The positive pool's checked ``(n_pos,)`` int64 0/1 instance labels and their digest.

    ``labels`` (the ``pos_labels`` argument) or, when ``None``, the labels the pool carries
    (:attr:`PatchPool.labels`); given both, they must agree.
    """
    carried = getattr(pos, "labels", None)
    if labels is None:
        labels = carried
    if labels is None:
        raise ValueError(f"method {method!r} needs pos_labels (the positive pool's instance "
                         f"labels): pass pos_labels, or a PatchPool that carries them "
                         f"(BagSet.pretraining_pools())")
    n_pos = len(pos)
    lab = np.asarray(labels)
    if lab.shape != (n_pos,) or not np.isin(lab, (0, 1)).all():
        raise ValueError(f"pos_labels must be {n_pos} values in {{0, 1}} (one per positive patch), "
                         f"got shape {lab.shape} with values {np.unique(lab)[:5].tolist()}")
    lab = lab.astype(np.int64)
    if carried is not None and not np.array_equal(lab, np.asarray(carried, dtype=np.int64)):
        raise ValueError("pos_labels differ from the instance labels that pos_images carries; "
                         "pass one of them")
    return lab, hashlib.sha256(lab.tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def pretrain(method: str, pos_images, neg_images, cfg: PretrainConfig, *, device=None,
             out_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
             stop_after: int | None = None, dist: D.DistContext | None = None,
             pos_labels=None) -> PretrainResult:
    """Pretrain an encoder with one strategy for ``cfg.steps`` steps; checkpoint; resume exactly.

    Strategies (SLAM-AGS, Acerbis et al., ISBI 2026, and its baselines): ``random`` (no
    training), ``simclr`` (NT-Xent on all patches), ``weak`` (patch classifier on slide labels,
    linear head on ``h``), ``supcon`` (SupCon with slide labels over two views), ``slam_sum`` /
    ``slam_pcgrad`` / ``slam_ags`` (NT-Xent on slide-positive + similarity loss on
    slide-negative patches, combined by ``surgery.combine``), the one-class competitor
    ``deep_svdd`` (:mod:`slamags_core.deep_svdd`) and the diagnostic ``sim_only``
    (similarity loss alone, which collapses). ``weak`` never trains the projection head, so
    its ``z`` is a random projection of ``h``: use ``embedding="h"`` with it. ``oracle`` is a
    CEILING, not a method: ``weak``'s patch classifier trained with the *instance* labels
    of the positive pool (1 = witness; ``pos_labels`` or the pool's own) instead of slide
    labels (negative-pool cells are all 0), looked up through each step's batch indices.

    Args:
        method: one of :data:`ENGINE_METHODS`.
        pos_images: patches of slide-positive training bags, ``(n_pos, H, W, 3)`` uint8: an
            array, a tensor, or a :class:`~slamags_core.bags.PatchPool` of a memory-mapped set.
        neg_images: patches of slide-negative training bags, likewise.
        cfg: the pretraining config (saved in the checkpoint).
        device: overrides ``cfg.device``.
        out_dir: folder for ``checkpoint.pt`` and ``log.jsonl``; ``None`` keeps nothing on disk.
        resume: continue from ``out_dir``'s checkpoint if there is one (a finished run is
            returned without training); ``False`` starts afresh and overwrites it.
        progress: show a tqdm progress bar (rank 0).
        stop_after: stop once this many steps are done, with a checkpoint (the schedule still
            spans ``cfg.steps``); a later call with ``resume=True`` continues. ``None`` = all.
        dist: the process group context; default :func:`slamags_core.distributed.current`
            (set up by ``torchrun``). All ranks must call with the same arguments.
        pos_labels: ``(n_pos,)`` 0/1 instance labels of ``pos_images``, needed by ``oracle``
            only (part of its checkpoint's data fingerprint). Default: the labels a
            :class:`~slamags_core.bags.PatchPool` carries (``BagSet.pretraining_pools()``).

    Raises:
        ValueError: unknown method, bad config values, images that are not uint8
            ``(N, H, W, 3)``, pools too small for the batch size, a checkpoint written
            with another method, config or pools, or (``oracle``) missing or bad labels.
        NonFiniteLossError: a loss became NaN/inf (names the step and strategy; the last
            good checkpoint is left in place).
    """
    cfg = _check_config(method, cfg)
    ctx = D.current() if dist is None else dist
    device = D.device_for(ctx, torch.device(device) if device is not None
                          else get_device(cfg.device))
    pos, neg = as_pool(pos_images, "pos_images", device), as_pool(neg_images, "neg_images", device)
    data = data_fingerprint(pos, neg)
    labels = None
    if STRATEGIES[method].instance_labels:
        labels, data["pos_labels"] = _instance_labels(pos_labels, pos, method)
    with _backend_settings(cfg, device):
        run = _setup(method, cfg, device, pos, neg, ctx, labels)
        try:
            history, summaries, ckpt = _train(run, out_dir, resume, progress, stop_after, data)
        finally:
            run.pools.close()
            D.destroy_group(run.group)
    run.encoder.eval()
    return PretrainResult(_plain_encoder(run).eval(), method, history, summaries, ckpt, run.head)


def _train(run: _Run, out_dir, resume: bool, progress: bool, stop_after: int | None, data: dict
           ) -> tuple[list[dict], list[dict], Path | None]:
    """The loop: steps, reads every ``log_every``, checkpoint + monitor every ``checkpoint_every``."""
    cfg, ctx = run.cfg, run.ctx
    total = cfg.steps if run.strategy.loss_fn is not None else 0
    end = total if stop_after is None else min(total, stop_after)
    ckpt = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    history, summaries, start = _begin(run, ckpt, resume, data)
    last_good = f"{ckpt} (step {start})" if ckpt is not None and ckpt.exists() else "none"
    bar = tqdm(total=end, initial=min(start, end), desc=run.method,
               disable=not progress or not ctx.is_main)
    run.encoder.train()
    if run.head is not None:
        run.head.train()
    pending, period, t0 = [], [], time.perf_counter()
    for step in range(start, end):
        pending.append(_step(run, step, end))
        bar.update(1)
        boundary = (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end
        if boundary or (step + 1) % cfg.log_every == 0:
            period += _flush(pending, run, last_good)
            pending = []
            bar.set_postfix(loss=f"{period[-1]['loss']:.4f}")
        if boundary:
            D.broadcast_buffers(run.encoder, ctx)
            summary = _summary(run, step + 1, period, time.perf_counter() - t0)
            history += period
            summaries.append(summary)
            if ckpt is not None and ctx.is_main:
                _save(run, ckpt, step + 1, history, summaries, data, len(period))
            D.barrier(ctx)  # nobody resumes from a checkpoint that is not written yet
            last_good = f"{ckpt} (step {step + 1})" if ckpt is not None else "none"
            if ctx.is_main:
                warn_if_collapsed(summary, f"step {step + 1} of {run.method!r}")
            period, t0 = [], time.perf_counter()
    bar.close()
    return history, summaries, ckpt

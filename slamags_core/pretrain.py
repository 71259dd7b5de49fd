"""One pretraining loop for every strategy: random, SimCLR, weak, SupCon and SLAM (sum/PCGrad/AGS).

SLAM-AGS (Acerbis et al., ISBI 2026) trains an encoder with two tasks per step: NT-Xent
(Chen et al., SimCLR, ICML 2020) over two views of patches from slide-POSITIVE bags, and the
similarity (alignment) loss over two views of patches from slide-NEGATIVE bags; the two task
gradients are combined by plain sum, PCGrad (Yu et al., NeurIPS 2020) or AGS (PCGrad + rescale to
the norm of the plain sum). The baselines share the same loop and the same batches; a strategy
is one row of :data:`slamags_core.strategies.STRATEGIES` (which forwards to run, which task
losses, how to combine); checkpoint files are read and checked by :mod:`slamags_core.checkpoint`.

Batching: every patch once per epoch; per pool a seeded permutation split into the same number
of steps, so each step holds positive and negative patches in proportion to the pool sizes.
For the SLAM methods the positive and negative patches are forwarded separately (both views of
one pool in one forward), so each task's backward traverses only its own graph and the per-task
gradients cost no more than the backward of the sum. (A single forward of the concatenated
batch would couple the two tasks through BatchNorm statistics and make each task's backward
traverse the whole batch.)

Randomness: each epoch draws its batches, augmentations and surgery orders from a CPU generator
seeded by ``(cfg.seed, epoch)``; the initial weights come from ``cfg.seed``. Hence a resumed run
continues exactly and, on the CPU, the same seed gives the same weights bit for bit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from slamags_core import surgery
from slamags_core.augment import Augmenter, as_uint8_batch
from slamags_core.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_NAME, LOG_NAME,
                                     check_compatible, data_fingerprint, load_checkpoint)
from slamags_core.config import PretrainConfig
from slamags_core.encoders import Encoder, autocast, build_encoder, uses_amp
from slamags_core.monitor import collapse_report, warn_if_collapsed
from slamags_core.strategies import ENGINE_METHODS, STRATEGIES, Strategy
from slamags_core.utils import atomic_torch_save, atomic_write_text, get_device
from slamags_core.validation import check_float, check_int

POOLS_ON_DEVICE_MAX_BYTES = 4 * 2**30  # pools up to this size are copied to the accelerator once


class NonFiniteLossError(RuntimeError):
    """A task loss became NaN or infinite; the message names the step and the strategy."""


# ----------------------------------------------------------------------------------------------
# Batching, seeding, schedule
# ----------------------------------------------------------------------------------------------

def steps_per_epoch(n_pos: int, n_neg: int, batch_size: int) -> int:
    """``ceil((n_pos + n_neg) / batch_size)``; every step must get >= 2 patches of each pool.

    Raises:
        ValueError: for batch_size < 4 or a pool too small for that many steps.
    """
    n_pos, n_neg = check_int(n_pos, "n_pos", ge=0), check_int(n_neg, "n_neg", ge=0)
    batch_size = check_int(batch_size, "batch_size", ge=4)
    n = math.ceil((n_pos + n_neg) / batch_size)
    if min(n_pos, n_neg) < 2 * n:
        raise ValueError(f"pools of {n_pos} positive / {n_neg} negative patches are too small for "
                         f"{n} steps of batch_size={batch_size}: each step needs >= 2 patches of "
                         f"each pool; raise batch_size or provide more patches")
    return n


def epoch_batches(n_pos: int, n_neg: int, batch_size: int, generator: torch.Generator
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's batches: per pool a seeded permutation split into the same number of steps.

    Returns:
        ``[(pos_idx, neg_idx), ...]``: every index of each pool exactly once per epoch; each
        step's share of positives is ``n_pos / (n_pos + n_neg)`` up to one patch.
    """
    n = steps_per_epoch(n_pos, n_neg, batch_size)
    pos = torch.randperm(n_pos, generator=generator)
    neg = torch.randperm(n_neg, generator=generator)
    return list(zip(torch.tensor_split(pos, n), torch.tensor_split(neg, n)))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """CPU generator for one epoch (batches, augmentations, surgery order) from (seed, epoch)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


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
    epochs = check_int(cfg.epochs, "epochs", ge=1)
    smallest = {"width": 1, "crop_size": 1, "proj_dim": 1, "batch_size": 4, "monitor_size": 2,
                "seed": 0}  # the other integer fields and their smallest allowed value
    return dataclasses.replace(
        cfg, epochs=epochs,
        warmup_epochs=check_int(cfg.warmup_epochs, "warmup_epochs", ge=0, le=epochs),
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
        history: one dict per step: ``epoch, step, lr, loss`` and ``loss_<task>`` per task
            (``loss_con``, ``loss_sim`` for SLAM), plus the surgery stats (``cosine``,
            ``conflict``, ``projected``, ``norm_<task>``, ``norm_sum``, ``norm_surgery``,
            ``norm_out``) for slam_* methods.
        epochs: one dict per epoch (epoch 0 = initialisation): mean losses, timing and the
            collapse monitor (``h_std``, ``h_erank``, ``z_std``, ... see :mod:`monitor`).
        checkpoint: path of the last checkpoint, or ``None`` without ``out_dir``.
        head: the weak strategy's slide-label head, else ``None``.
    """

    encoder: Encoder
    method: str
    history: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    head: nn.Module | None = None


@dataclass
class _Run:
    method: str
    strategy: Strategy
    cfg: PretrainConfig
    device: torch.device
    encoder: Encoder
    fwd: Callable
    head: nn.Module | None
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    aug: Augmenter
    pos: torch.Tensor           # (n_pos, H, W, 3) uint8
    neg: torch.Tensor           # (n_neg, H, W, 3) uint8
    held: torch.Tensor          # (m, H, W, 3) uint8, the fixed monitor sample
    n_steps: int
    amp: bool
    channels_last: bool
    pos_labels: torch.Tensor | None = None  # (n_pos,) instance labels, oracle ceiling only


def _held_sample(pos: torch.Tensor, neg: torch.Tensor, cfg: PretrainConfig) -> torch.Tensor:
    """Fixed monitor sample: ``monitor_size`` patches drawn in proportion from the two pools."""
    g = torch.Generator().manual_seed(cfg.seed)
    m = min(cfg.monitor_size, len(pos) + len(neg))
    k_pos = min(len(pos), round(m * len(pos) / (len(pos) + len(neg))))
    k_neg = min(len(neg), m - k_pos)
    ip = torch.randperm(len(pos), generator=g)[:k_pos]
    ineg = torch.randperm(len(neg), generator=g)[:k_neg]
    return torch.cat([pos[ip.to(pos.device)], neg[ineg.to(neg.device)]])


def _setup(method: str, cfg: PretrainConfig, device: torch.device, pos: torch.Tensor,
           neg: torch.Tensor) -> _Run:
    strategy = STRATEGIES[method]
    with torch.random.fork_rng(devices=[]):  # same init for every method of one seed
        torch.manual_seed(cfg.seed)
        encoder = build_encoder(cfg)
        head = nn.Linear(encoder.feature_dim, 2) if strategy.head else None
    encoder.to(device)
    head = head.to(device) if head is not None else None
    if strategy.setup is not None:  # state built from the initial encoder (deep_svdd's centre)
        head = strategy.setup(encoder, neg, cfg, device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
    fwd = torch.compile(encoder) if cfg.compile and device.type == "cuda" else encoder
    params = [p for p in encoder.parameters() if p.requires_grad]  # deep_svdd freezes BN affine
    params += list(head.parameters()) if head is not None else []
    opt = _optimizer(params, cfg)
    n_steps = steps_per_epoch(len(pos), len(neg), cfg.batch_size) if strategy.loss_fn else 0
    warm, total = cfg.warmup_epochs * n_steps, cfg.epochs * n_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warm, total))
    if device.type != "cpu" and pos.nbytes + neg.nbytes <= POOLS_ON_DEVICE_MAX_BYTES:
        pos, neg = pos.to(device), neg.to(device)
    return _Run(method, strategy, cfg, device, encoder, fwd, head, params, opt, sched,
                Augmenter.from_config(cfg, device), pos, neg, _held_sample(pos, neg, cfg),
                n_steps, uses_amp(cfg, device), channels_last)


# ----------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------

def _gather(pool: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = pool.index_select(0, idx.to(pool.device))
    if x.device != device:
        x = (x.pin_memory() if device.type == "cuda" else x).to(device, non_blocking=True)
    return x


def _views(run: _Run, pos_idx: torch.Tensor, neg_idx: torch.Tensor
           ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Both views of each group stacked ``(2n, 3, c, c)``, and the slide labels of "all"."""
    pos, neg = _gather(run.pos, pos_idx, run.device), _gather(run.neg, neg_idx, run.device)
    y = torch.cat([torch.ones(len(pos), dtype=torch.long),
                   torch.zeros(len(neg), dtype=torch.long)]).to(run.device)  # (B,)
    if run.strategy.instance_labels:  # oracle ceiling: the cells' own labels replace slide labels
        y[:len(pos)] = run.pos_labels[pos_idx].to(run.device)
    groups = {}
    for g in run.strategy.groups:
        if g == "all":
            v1, v2 = run.aug(torch.cat([pos, neg]))
        elif g == "pos":
            v1, v2 = run.aug(pos)
        else:
            v1, v2 = run.aug(neg, center_first=run.strategy.center_neg)
        x = torch.cat([v1, v2])  # (2n, 3, c, c)
        groups[g] = x.contiguous(memory_format=torch.channels_last) if run.channels_last else x
    return groups, y


def _flat_stats(stats: dict, tasks: list[str]) -> dict:
    out = {"cosine": stats["cosine"], "conflict": stats["conflict"],
           "projected": any(stats["projected"])}
    for t, p, n in zip(tasks, stats["projected"], stats["task_norms"]):
        out[f"projected_{t}"], out[f"norm_{t}"] = p, n
    out.update({k: stats[k] for k in ("norm_sum", "norm_surgery", "norm_out")})
    return out


def _backward(run: _Run, losses: dict[str, torch.Tensor], gen: torch.Generator) -> dict:
    """Write the step's gradient into ``.grad``; return the surgery stats (empty if none)."""
    method = run.strategy.surgery
    if method is None or (method == "sum" and not run.cfg.surgery_stats):
        run.opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        return {}
    grads = surgery.task_gradients(list(losses.values()), run.params)  # T x (P,)
    g, stats = surgery.combine(grads, method, generator=gen)
    surgery.assign_gradients(run.params, g)
    return _flat_stats(stats.to_dict(), list(losses))


def _step(run: _Run, pos_idx: torch.Tensor, neg_idx: torch.Tensor, gen: torch.Generator,
          where: str) -> dict:
    """Views -> forward per group -> task losses -> (surgery) -> optimiser step; one log record."""
    groups, y = _views(run, pos_idx, neg_idx)
    with autocast(run.amp):
        out = {g: run.fwd(x) for g, x in groups.items()}  # g -> (h, z)
    losses = run.strategy.loss_fn(out, y, run.cfg, run.head)
    rec = {f"loss_{k}": float(v.detach()) for k, v in losses.items()}
    rec["loss"] = sum(rec.values())
    if not all(math.isfinite(v) for v in rec.values()):
        raise NonFiniteLossError(f"non-finite loss {rec} at {where} of strategy {run.method!r}")
    rec["lr"] = run.opt.param_groups[0]["lr"]
    rec.update(_backward(run, losses, gen))
    run.opt.step()
    run.sched.step()
    return rec


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
# Epochs, checkpoints, logs
# ----------------------------------------------------------------------------------------------

def _train_epoch(run: _Run, epoch: int, bar, last_good: str) -> list[dict]:
    """One epoch (0-based ``epoch``); returns its step records."""
    gen = epoch_generator(run.cfg.seed, epoch)
    run.aug.generator = gen
    run.encoder.train()
    if run.head is not None:
        run.head.train()
    records = []
    batches = epoch_batches(len(run.pos), len(run.neg), run.cfg.batch_size, gen)
    for i, (pi, ni) in enumerate(batches):
        step = epoch * run.n_steps + i
        where = f"epoch {epoch + 1} step {step} (last good checkpoint: {last_good})"
        rec = {"epoch": epoch + 1, "step": step, **_step(run, pi, ni, gen, where)}
        records.append(rec)
        bar.update(1)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
    return records


def _epoch_summary(epoch: int, records: list[dict], seconds: float, n_patches: int) -> dict:
    out: dict = {"epoch": epoch}
    for k in records[0]:
        if k.startswith("loss") or k.startswith("norm_") or k == "cosine":
            out[k] = float(np.mean([r[k] for r in records]))
    if "conflict" in records[0]:
        out["conflict_frac"] = float(np.mean([r["conflict"] for r in records]))
    out.update(time_s=seconds, patches_per_s=n_patches / seconds)
    return out


def _state(run: _Run, epoch: int, history: list[dict], epochs: list[dict], data: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(run.cfg),
            "method": run.method, "epoch": epoch, "steps_per_epoch": run.n_steps, "data": data,
            "model": run.encoder.state_dict(),
            "head": run.head.state_dict() if run.head is not None else {},
            "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
            "history": history, "epochs": epochs, "torch_version": str(torch.__version__)}


def _restore(run: _Run, ckpt: dict) -> tuple[list[dict], list[dict], int]:
    run.encoder.load_state_dict(ckpt["model"])
    if run.head is not None:
        run.head.load_state_dict(ckpt["head"])
    run.opt.load_state_dict(ckpt["optimizer"])
    run.sched.load_state_dict(ckpt["scheduler"])
    return list(ckpt["history"]), list(ckpt["epochs"]), int(ckpt["epoch"])


def _log_lines(records: list[dict], kind: str) -> str:
    return "".join(json.dumps({"type": kind, **r}) + "\n" for r in records)


def _begin(run: _Run, ckpt: Path | None, resume: bool, data: dict, total: int
           ) -> tuple[list[dict], list[dict], int]:
    """Restore ``(history, epochs, start_epoch)`` from the checkpoint, or start afresh."""
    log = ckpt.with_name(LOG_NAME) if ckpt is not None else None
    if ckpt is not None and resume and ckpt.exists():
        saved = load_checkpoint(ckpt, run.device)
        check_compatible(saved, run.cfg, run.method, data, ckpt)
        history, epochs, start = _restore(run, saved)
        atomic_write_text(_log_lines(history, "step") + _log_lines(epochs, "epoch"), log)
        return history, epochs, start
    epochs = [{"epoch": 0, **_monitor(run)}]  # the initialisation
    if ckpt is not None:
        atomic_write_text(_log_lines(epochs, "epoch"), log)
        if total == 0:  # random: keep the initial encoder for the next stages
            atomic_torch_save(_state(run, 0, [], epochs, data), ckpt)
    return [], epochs, 0


def _save_epoch(run: _Run, ckpt: Path, epoch: int, history: list[dict], epochs: list[dict],
                data: dict) -> None:
    """Atomic checkpoint, then append the epoch's step records and summary to the log."""
    atomic_torch_save(_state(run, epoch, history, epochs, data), ckpt)
    with open(ckpt.with_name(LOG_NAME), "a") as f:
        f.write(_log_lines(history[-run.n_steps:], "step") + _log_lines(epochs[-1:], "epoch"))


def _instance_labels(labels, n_pos: int, method: str) -> tuple[torch.Tensor, str]:
    """Checked ``(n_pos,)`` long tensor of 0/1 labels and its digest (for the fingerprint)."""
    if labels is None:
        raise ValueError(f"method {method!r} needs pos_labels (the positive pool's instance labels)")
    lab = np.asarray(labels)
    if lab.shape != (n_pos,) or not np.isin(lab, (0, 1)).all():
        raise ValueError(f"pos_labels must be {n_pos} values in {{0, 1}} (one per positive patch), "
                         f"got shape {lab.shape} with values {np.unique(lab)[:5].tolist()}")
    lab = lab.astype(np.int64)
    return torch.from_numpy(lab), hashlib.sha256(lab.tobytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def pretrain(method: str, pos_images: np.ndarray, neg_images: np.ndarray, cfg: PretrainConfig,
             *, device=None, out_dir: str | Path | None = None, resume: bool = True,
             progress: bool = True, stop_after: int | None = None,
             pos_labels: np.ndarray | None = None) -> PretrainResult:
    """Pretrain an encoder with one strategy; checkpoint every epoch; resume exactly.

    Strategies (SLAM-AGS, Acerbis et al., ISBI 2026, and its baselines): ``random`` (no
    training), ``simclr`` (NT-Xent on all patches), ``weak`` (patch classifier on slide labels,
    linear head on ``h``), ``supcon`` (SupCon with slide labels over two views), ``slam_sum`` /
    ``slam_pcgrad`` / ``slam_ags`` (NT-Xent on slide-positive + similarity loss on
    slide-negative patches, combined by ``surgery.combine``), the one-class competitor
    ``deep_svdd`` (:mod:`slamags_core.deep_svdd`) and the diagnostic ``sim_only``
    (similarity loss alone, which collapses). ``weak`` never trains the projection head, so
    its ``z`` is a random projection of ``h``: use ``embedding="h"`` with it. ``oracle`` is a
    CEILING, not a method: ``weak``'s patch classifier trained with the *instance* labels
    ``pos_labels`` (1 = witness) instead of slide labels (negative-pool cells are all 0).

    Args:
        method: one of :data:`ENGINE_METHODS`.
        pos_images: ``(n_pos, H, W, 3)`` uint8 patches of slide-positive training bags.
        neg_images: ``(n_neg, H, W, 3)`` uint8 patches of slide-negative training bags.
        cfg: the pretraining config (saved in the checkpoint).
        device: overrides ``cfg.device``.
        out_dir: folder for ``checkpoint.pt`` and ``log.jsonl``; ``None`` keeps nothing on disk.
        resume: continue from ``out_dir``'s checkpoint if there is one (a finished run is
            returned without training); ``False`` starts afresh and overwrites it.
        progress: show a tqdm progress bar.
        stop_after: stop once this many epochs are done (the schedule still spans
            ``cfg.epochs``); a later call with ``resume=True`` continues. ``None`` = all.
        pos_labels: ``(n_pos,)`` 0/1 instance labels of ``pos_images``; required by
            ``oracle`` (part of its checkpoint's data fingerprint), ignored by every other method.

    Raises:
        ValueError: unknown method, bad config values, images that are not uint8
            ``(N, H, W, 3)``, pools too small for the batch size, or a checkpoint written
            with another method, config or pools.
        NonFiniteLossError: a loss became NaN/inf (names the step and strategy; the last
            good checkpoint is left in place).
    """
    cfg = _check_config(method, cfg)
    device = torch.device(device) if device is not None else get_device(cfg.device)
    pos, neg = as_uint8_batch(pos_images), as_uint8_batch(neg_images)
    data = data_fingerprint(pos, neg)
    run = _setup(method, cfg, device, pos, neg)
    if run.strategy.instance_labels:
        run.pos_labels, data["pos_labels"] = _instance_labels(pos_labels, len(pos), method)
    total = cfg.epochs if run.strategy.loss_fn is not None else 0
    end = total if stop_after is None else min(total, stop_after)
    ckpt = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    history, epochs, start = _begin(run, ckpt, resume, data, total)
    last_good = f"{ckpt} (epoch {start})" if ckpt is not None and ckpt.exists() else "none"
    bar = tqdm(total=end * run.n_steps, initial=min(start, end) * run.n_steps, desc=method,
               disable=not progress)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        records = _train_epoch(run, epoch, bar, last_good)
        summary = _epoch_summary(epoch + 1, records, time.perf_counter() - t0,
                                 len(run.pos) + len(run.neg))
        summary.update(_monitor(run))
        history += records
        epochs.append(summary)
        if ckpt is not None:
            _save_epoch(run, ckpt, epoch + 1, history, epochs, data)
            last_good = f"{ckpt} (epoch {epoch + 1})"
        warn_if_collapsed(summary, f"epoch {epoch + 1} of {method!r}")
    bar.close()
    run.encoder.eval()
    return PretrainResult(run.encoder, method, history, epochs, ckpt, run.head)

"""Pretraining throughput: images/s per strategy, AGS overhead vs plain sum, peak memory.

Prints one JSON object. On the CPU it times the ``smoke`` and ``laptop`` encoders; with CUDA it
also times the ``paper`` preset (ResNet-18, 224 px crops of 250 px patches, bfloat16 autocast,
channels_last). Steps of the compared strategies are interleaved in one process (round robin)
and the median step time is reported, so machine load affects them alike.

    python benchmarks/bench_pretrain.py [--rounds 12] [--presets smoke laptop] [--out FILE]

``patches_per_s`` counts training patches; every patch gives two augmented views, so the
encoder sees ``views_per_s = 2 * patches_per_s`` images per second. Pools are random uint8
patches of the preset's size (the step cost does not depend on the content).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slamags_core import pretrain as P  # noqa: E402
from slamags_core.config import get_preset  # noqa: E402
from slamags_core.encoders import uses_amp  # noqa: E402

# (label, method, surgery_stats): slam_sum once with the cheap single backward, once with the
# per-task gradients it needs to log conflict statistics.
VARIANTS = (("simclr", "simclr", True), ("slam_sum", "slam_sum", False),
            ("slam_sum+stats", "slam_sum", True), ("slam_ags", "slam_ags", True))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _runs(cfg, device, image_size: int, n_pool: int) -> dict:
    rng = np.random.default_rng(0)
    pos = torch.from_numpy(rng.integers(0, 256, (n_pool, image_size, image_size, 3), np.uint8))
    neg = torch.from_numpy(rng.integers(0, 256, (n_pool, image_size, image_size, 3), np.uint8))
    out = {}
    for label, method, stats in VARIANTS:
        c = dataclasses.replace(cfg, surgery_stats=stats)
        out[label] = P._setup(method, c, device, pos, neg)
        out[label].aug.generator = P.epoch_generator(c.seed, 0)
    return out


def _time_interleaved(runs: dict, device: torch.device, rounds: int, warmup: int) -> dict:
    """Median seconds per step of each run, steps interleaved round robin."""
    times = {k: [] for k in runs}
    labels = list(runs)
    for r in range(warmup + rounds):
        order = labels[r % len(labels):] + labels[:r % len(labels)]  # rotate who goes first
        for k in order:
            run = runs[k]
            gen = run.aug.generator
            (pi, ni), = P.epoch_batches(len(run.pos), len(run.neg), run.cfg.batch_size, gen)[:1]
            _sync(device)
            t0 = time.perf_counter()
            P._step(run, pi, ni, gen, f"bench round {r}")
            _sync(device)
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_preset(name: str, device: torch.device, rounds: int, warmup: int) -> dict:
    preset = get_preset(name)
    cfg = dataclasses.replace(preset.pretrain, device=device.type)
    n_pool = 2 * cfg.batch_size  # per pool: 4 steps of batch_size patches, half of each pool
    runs = _runs(cfg, device, preset.cells.image_size, n_pool)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_s = _time_interleaved(runs, device, rounds, warmup)
    batch = 2 * n_pool // P.steps_per_epoch(n_pool, n_pool, cfg.batch_size)  # patches per step
    res = {"encoder": cfg.encoder, "width": cfg.width, "crop_size": cfg.crop_size,
           "image_size": preset.cells.image_size, "batch_size": batch,
           "amp_bf16": uses_amp(cfg, device), "methods": {}}
    for k, s in step_s.items():
        res["methods"][k] = {"step_s": round(s, 5), "patches_per_s": round(batch / s, 1),
                             "views_per_s": round(2 * batch / s, 1)}
    res["ratio_ags_over_sum"] = round(step_s["slam_ags"] / step_s["slam_sum"], 3)
    res["ratio_ags_over_sum_with_stats"] = round(step_s["slam_ags"] / step_s["slam_sum+stats"], 3)
    if device.type == "cuda":
        res["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="timed steps per strategy")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per strategy")
    ap.add_argument("--presets", nargs="+", default=["smoke", "laptop"], help="CPU presets")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA paper benchmark")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    cpu = torch.device("cpu")
    out = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "cpu_threads": torch.get_num_threads(), "cpu": {}}
    for name in args.presets:
        out["cpu"][name] = bench_preset(name, cpu, args.rounds, args.warmup)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if torch.cuda.is_available() and not args.no_cuda:
        dev = torch.device("cuda")
        out["cuda"] = {"gpu": torch.cuda.get_device_name(0),
                       "paper": bench_preset("paper", dev, args.rounds, max(args.warmup, 3))}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()

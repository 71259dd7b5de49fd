"""Pretraining throughput: augmented images/s per strategy, AGS/sum step ratio, GPU memory, MFU.

Prints one JSON object. On the CPU it times the ``smoke`` and ``laptop`` presets; with CUDA it
also times the ``paper`` preset (ResNet-18, 224 px crops of 250 px patches, bfloat16 autocast,
channels_last, optionally ``--compile``) with pools of the paper's real size (64,000 patches,
about 12 GB), placed where the engine places them (``PretrainConfig.pool_placement``; pass
``--pool-placement host`` to time the prefetch path of pools that stay in host memory).

Steps run as training runs them (the engine's ``_step``; losses read every block, no per-step
synchronisation): blocks of ``--block`` steps of the compared strategies interleave round robin
and the median block time per step is reported, so machine load affects them alike.

* ``images_per_s``: augmented views through the encoder per second (2 per patch);
* ``ratio_ags_over_sum``: step time of ``slam_ags`` / ``slam_sum`` (single backward);
  ``..._with_stats``: over ``slam_sum`` computing the same per-task gradients for its statistics;
* ``gflop_per_step``: matmul/convolution FLOPs of one step, forward + backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (augmentation not counted);
* ``mfu``: achieved FLOP/s over the GPU's dense bfloat16 peak (:data:`BF16_PEAK_TFLOPS`, or
  ``--peak-tflops``); ``peak_mem_gb``: ``torch.cuda.max_memory_allocated`` during the strategy.

    python benchmarks/bench_pretrain.py [--rounds 12] [--presets smoke laptop] [--out FILE]
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
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slamags_core import batching as B  # noqa: E402
from slamags_core import pretrain as P  # noqa: E402
from slamags_core.config import get_preset  # noqa: E402
from slamags_core.encoders import uses_amp  # noqa: E402

# (label, method, surgery_stats): slam_sum once with the cheap single backward, once with the
# per-task gradients it needs to log conflict statistics.
VARIANTS = (("simclr", "simclr", True), ("slam_sum", "slam_sum", False),
            ("slam_sum+stats", "slam_sum", True), ("slam_ags", "slam_ags", True))
# dense bfloat16 tensor-core peak (TFLOP/s, no sparsity), from the vendors' data sheets;
# matched in this order against torch.cuda.get_device_name()
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                    ("GH200", 989.4), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0),
                    ("A10", 125.0))


def bf16_peak(name: str) -> float | None:
    """Dense bf16 peak of a GPU by name, or ``None`` when it is not in the table."""
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in name:
            return tflops
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _pools(n: int, size: int, device: torch.device, placement: str):
    """Two pools of random uint8 patches (the step cost does not depend on the content)."""
    if device.type == "cuda" and placement != "host":
        g = torch.Generator(device=device).manual_seed(0)
        return [torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, device=device,
                              generator=g) for _ in range(2)]
    rng = np.random.default_rng(0)
    return [np.frombuffer(rng.bytes(n * size * size * 3), np.uint8).reshape(n, size, size, 3)
            for _ in range(2)]


def _flops(run) -> float:
    """Matmul/convolution FLOPs of one step (forward + backward)."""
    with FlopCounterMode(display=False) as fc:
        P._flush([P._step(run, 10_000)], run, "bench")
    return float(fc.get_total_flops())


def bench_preset(name: str, device: torch.device, rounds: int, block: int, *,
                 placement: str = "auto", compile_: bool = False,
                 peak_tflops: float | None = None) -> dict:
    preset = get_preset(name)
    cfg = dataclasses.replace(preset.pretrain, device=device.type, compile=compile_,
                              pool_placement=placement)
    n_pool = preset.bags.n_train * preset.bags.bag_size // 2  # the preset's training pools
    pos, neg = _pools(n_pool, preset.cells.image_size, device, placement)
    runs = {}
    for label, method, stats in VARIANTS:
        c = dataclasses.replace(cfg, surgery_stats=stats)
        runs[label] = P._setup(method, c, device, B.as_pool(pos, "pos", device),
                               B.as_pool(neg, "neg", device))
    flops = {k: _flops(r) for k, r in runs.items()}
    times = {k: [] for k in runs}
    peak_mem = {k: 0.0 for k in runs}
    labels, step = list(runs), 0
    for r in range(rounds + 1):  # round 0 warms up (cuDNN autotuning, compilation)
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for k in order:
            run = runs[k]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            _sync(device)
            t0 = time.perf_counter()
            pending = [P._step(run, step + i, step + block) for i in range(block)]
            P._flush(pending, run, "bench")  # the one read per block, as in training
            _sync(device)
            if r > 0:
                times[k].append((time.perf_counter() - t0) / block)
            if device.type == "cuda":
                peak_mem[k] = max(peak_mem[k], torch.cuda.max_memory_allocated() / 2**30)
        step += block
    for run in runs.values():
        run.pools.close()
    step_s = {k: statistics.median(v) for k, v in times.items()}
    batch = sum(runs["slam_ags"].sampler.shares)
    res = {"encoder": cfg.encoder, "width": cfg.width, "crop_size": cfg.crop_size,
           "image_size": preset.cells.image_size, "batch_size": batch,
           "pool_patches": 2 * n_pool,
           "pool_gb": round(2 * n_pool * preset.cells.image_size ** 2 * 3 / 2**30, 2),
           "pools_on_device": runs["slam_ags"].pools.on_device and device.type != "cpu",
           "amp_bf16": uses_amp(cfg, device), "channels_last": runs["slam_ags"].channels_last,
           "compile": compile_ and device.type == "cuda", "block_steps": block,
           "rounds": rounds, "methods": {}}
    for k, s in step_s.items():
        m = {"step_s": round(s, 5), "patches_per_s": round(batch / s, 1),
             "images_per_s": round(2 * batch / s, 1),
             "gflop_per_step": round(flops[k] / 1e9, 3),
             "achieved_gflop_per_s": round(flops[k] / s / 1e9, 1)}
        if peak_tflops:
            m["mfu"] = round(flops[k] / s / (peak_tflops * 1e12), 4)
        if device.type == "cuda":
            m["peak_mem_gb"] = round(peak_mem[k], 2)
        res["methods"][k] = m
    res["ratio_ags_over_sum"] = round(step_s["slam_ags"] / step_s["slam_sum"], 3)
    res["ratio_ags_over_sum_with_stats"] = round(step_s["slam_ags"] / step_s["slam_sum+stats"], 3)
    res["peak_tflops_bf16"] = peak_tflops
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="timed blocks per strategy")
    ap.add_argument("--block", type=int, default=None,
                    help="steps per timed block (default: 2 on the CPU, 10 on CUDA)")
    ap.add_argument("--presets", nargs="+", default=["smoke", "laptop"], help="CPU presets")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA paper benchmark")
    ap.add_argument("--compile", action="store_true", help="torch.compile the encoder (CUDA)")
    ap.add_argument("--pool-placement", choices=("auto", "device", "host"), default="auto")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak, if it is not in the table")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    cpu = torch.device("cpu")
    out = {"torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "cpu_threads": torch.get_num_threads(), "cpu": {}}
    for name in args.presets:
        out["cpu"][name] = bench_preset(name, cpu, args.rounds, args.block or 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if torch.cuda.is_available() and not args.no_cuda:
        dev = torch.device("cuda", torch.cuda.current_device())
        gpu = torch.cuda.get_device_name(dev)
        peak = args.peak_tflops or bf16_peak(gpu)
        out["cuda"] = {"gpu": gpu, "paper": bench_preset(
            "paper", dev, args.rounds, args.block or 10, placement=args.pool_placement,
            compile_=args.compile, peak_tflops=peak)}
    else:
        out["cuda"] = "not measured (no CUDA device in this run)"
    text = json.dumps(out, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()

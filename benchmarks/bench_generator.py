"""Throughput of the synthetic cell renderer (cells per second) at several patch sizes.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_generator.py [--cells N] [--repeats R]``.
Prints one JSON object: cells/s per size (best of R runs), the machine and the settings.
Issue target: >= 2,000 cells/s at 64 px on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from slamags_core.synthetic import render_cells, sample_stain

SIZES = (32, 40, 64, 224, 250)


def cells_per_second(size: int, n_cells: int, repeats: int, seed: int = 0) -> float:
    """Best-of-``repeats`` throughput for one slide of ``n_cells`` half LYT / half BLA."""
    rng = np.random.default_rng(seed)
    types = ["LYT", "BLA"] * (n_cells // 2)
    stain = sample_stain(rng, 1)[0]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        render_cells(types, image_size=size, difficulty=0.5, rng=rng, stain=stain)
        best = min(best, time.perf_counter() - t0)
    return len(types) / best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000, help="cells per run at <= 64 px")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size (best kept)")
    args = parser.parse_args(argv)
    result = {"cells_per_s": {}, "cells": {}, "repeats": args.repeats,
              "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
              "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "numpy": np.__version__}
    for size in SIZES:
        n = args.cells if size <= 64 else max(2, args.cells // 10)
        result["cells"][size] = n
        result["cells_per_s"][size] = round(cells_per_second(size, n, args.repeats), 1)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

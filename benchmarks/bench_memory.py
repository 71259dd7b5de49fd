"""Memory of the paper-shaped data path: render a bag set of 250 px cells to disk, pretrain from it.

For each set size (cells), two fresh processes:

1. *render*: ``load_or_build_bags`` writes the set bag by bag into a memory-mapped ``.npy``
   (peak anonymous memory, cells/s, size on disk);
2. *train*: opens the set memory-mapped, takes the pretraining pools as index views and runs a
   few steps of the paper encoder (ResNet-18, 224 px crops); reports the peak anonymous memory,
   the step time, and the read throughput of the set from disk (its pages dropped from the page
   cache first with ``posix_fadvise(DONTNEED)``): sequential, and random 256-patch batches as a
   pretraining step reads them.

Peak anonymous memory is ``RssAnon`` of ``/proc/self/status`` sampled every 10 ms: the pages of
the mapped file belong to the page cache, not to the process (``RssFile``), and the kernel may
drop them at any time, so ``RssAnon`` is what a set larger than the RAM would have to fit in.
Linux only.

    python benchmarks/bench_memory.py --cells 15000 60000 --out bench_memory.json
    python benchmarks/bench_memory.py --cells 60000 --keep      # keep the rendered sets
    python benchmarks/bench_memory.py --set data/cache/bench_memory/bags-<hash>  # train phase only

The sets go to ``--root`` (default ``data/cache/bench_memory``) and are deleted afterwards unless
``--keep``: 60,000 cells take about 11 GB.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class PeakRss:
    """Samples ``RssAnon``/``RssFile`` of this process in a background thread (kB -> MB)."""

    def __init__(self, every_s: float = 0.01):
        self.every_s, self.peak_anon, self.peak_file = every_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, float]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssFile:", "VmHWM:")):
                    key, kb = line.split()[:2]
                    out[key[:-1]] = int(kb) / 1024
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            r = self.read()
            self.peak_anon = max(self.peak_anon, r["RssAnon"])
            self.peak_file = max(self.peak_file, r["RssFile"])
            time.sleep(self.every_s)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        r = self.read()
        self.peak_anon = max(self.peak_anon, r["RssAnon"])


def _configs(cells: int):
    from slamags_core.config import BagConfig, CellConfig

    if cells % 1000 or cells < 2000:
        raise SystemExit(f"--cells must be a multiple of the 1000-cell bag size and >= 2000 (a "
                         f"positive and a negative bag for the two pools), got {cells}")
    return (CellConfig(image_size=250),
            BagConfig(bag_size=1000, witness_rate=0.01, n_train=cells // 1000, n_val=0, n_test=0,
                      seed=0))


def render(cells: int, root: Path) -> dict:
    """Phase 1 (own process): render the set to disk."""
    from slamags_core.bags import bags_cache_path, load_or_build_bags

    cell_cfg, bag_cfg = _configs(cells)
    path = bags_cache_path(cell_cfg, bag_cfg, root=root)
    existed = path.exists()
    t0 = time.perf_counter()
    with PeakRss() as rss:
        bags = load_or_build_bags(cell_cfg, bag_cfg, root=root)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.iterdir())
    return {"cells": len(bags.images), "path": str(path), "reused": existed,
            "disk_gb": round(size / 1e9, 2), "render_s": round(seconds, 1),
            "cells_per_s": None if existed else round(cells / seconds, 1),
            "peak_rss_anon_mb": round(rss.peak_anon)}


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def train(path: Path, steps: int, batch_size: int, read_mb: int) -> dict:
    """Phase 2 (own process): pretrain a few steps from the memory-mapped set at ``path``."""
    import numpy as np
    import torch

    from slamags_core.bags import BagSet
    from slamags_core.config import get_preset
    from slamags_core.batching import BatchSampler
    from slamags_core.pretrain import pretrain

    images = Path(path) / "images.npy"
    cfg = dataclasses.replace(get_preset("paper").pretrain, steps=steps, warmup_steps=1,
                              batch_size=batch_size, checkpoint_every=steps, log_every=1,
                              monitor_size=16, device="cpu")
    out: dict = {"encoder": cfg.encoder, "crop_size": cfg.crop_size, "batch_size": batch_size,
                 "steps": steps, "torch_threads": torch.get_num_threads()}
    with PeakRss() as rss:
        bags = BagSet.load(path)  # opens the memory map
        out["cells"] = len(bags.images)
        pos, neg = bags.pretraining_pools()
        out["pool_patches"] = len(pos) + len(neg)
        out["pool_gb"] = round((pos.nbytes + neg.nbytes) / 1e9, 2)
        # read throughput from disk: pages of this file dropped from the page cache first
        _drop_cache(images)
        n_seq = max(1, read_mb * 2**20 // (250 * 250 * 3))
        t0 = time.perf_counter()
        for i in range(0, n_seq, 512):
            np.asarray(bags.images[i:min(n_seq, i + 512)]).sum(dtype=np.uint64)
        out["read_sequential_mb_s"] = round(n_seq * 250 * 250 * 3 / 2**20 / (time.perf_counter() - t0))
        _drop_cache(images)
        sampler = BatchSampler(len(pos), len(neg), 256, seed=1)
        t0, n_read = time.perf_counter(), 0
        for s in range(8):
            pi, ni = sampler.batch(s)
            n_read += len(pos.read(pi.numpy())) + len(neg.read(ni.numpy()))
        dt = time.perf_counter() - t0
        out["read_random_batches_mb_s"] = round(n_read * 250 * 250 * 3 / 2**20 / dt)
        out["read_random_patches_per_s"] = round(n_read / dt)
        _drop_cache(images)
        rss_before = PeakRss.read()
        t0 = time.perf_counter()
        res = pretrain("slam_ags", pos, neg, cfg, device="cpu", progress=False)
        out["pretrain_s"] = round(time.perf_counter() - t0, 1)
        out["final_loss"] = round(res.history[-1]["loss"], 4)
        out["rss_anon_before_pretrain_mb"] = round(rss_before["RssAnon"])
    out["peak_rss_anon_mb"] = round(rss.peak_anon)
    out["peak_rss_file_mb"] = round(rss.peak_file)
    return out


def _child(phase: str, args, path: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--root", str(args.root),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--read-mb", str(args.read_mb), "--cells", str(args.cells[0])]
    cmd += ["--set", path] if path else []
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode:
        raise SystemExit(f"the {phase} phase failed (exit status {res.returncode}):\n"
                         f"{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[15_000, 60_000],
                    help="set sizes (multiples of 1000)")
    ap.add_argument("--root", type=Path, default=ROOT / "data" / "cache" / "bench_memory")
    ap.add_argument("--steps", type=int, default=3, help="pretraining steps per size")
    ap.add_argument("--batch-size", type=int, default=32, help="patches per step (CPU)")
    ap.add_argument("--read-mb", type=int, default=2048, help="MB read sequentially")
    ap.add_argument("--keep", action="store_true", help="keep the rendered sets")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--set", default=None, help="an existing set's folder: train phase only")
    ap.add_argument("--phase", choices=("render", "train"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase == "render":
        print(json.dumps(render(args.cells[0], args.root)))
        return {}
    if args.phase == "train":
        print(json.dumps(train(Path(args.set), args.steps, args.batch_size, args.read_mb)))
        return {}
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
              "sizes": []}
    for cells in args.cells:
        _configs(cells)  # refuse a bad size before any work
    if args.set:  # the train phase of an existing set
        row = {"train": _child("train", args, args.set)}
        result["sizes"].append(row)
        args.cells, args.keep = [], True
    for cells in args.cells:
        one = argparse.Namespace(**{**vars(args), "cells": [cells]})
        rendered = _child("render", one)
        row = {"cells": cells, "render": rendered, "train": _child("train", one, rendered["path"])}
        result["sizes"].append(row)
        print(json.dumps(row), flush=True)
        if not args.keep:
            shutil.rmtree(row["render"]["path"], ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()

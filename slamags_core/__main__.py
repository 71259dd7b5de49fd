"""Command line: ``python -m slamags_core {sweep,pretrain,merge,report,generate,site,notebooks} ...``.

    python -m slamags_core sweep --preset laptop --out outputs/sweep
    python -m slamags_core sweep --preset paper --out runs/paper --shard 0/8   # one of 8 jobs
    python -m slamags_core merge --out runs/paper                              # combine shards
    torchrun --nproc_per_node=4 -m slamags_core pretrain --preset paper --method slam_ags
    python -m slamags_core report outputs/sweep
    python -m slamags_core generate --preset laptop
    python -m slamags_core site --out outputs/site --preset smoke                # course site
    python -m slamags_core notebooks --out outputs/notebooks

``sweep`` and ``pretrain`` run as they are or under ``torchrun`` (data-parallel pretraining).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from slamags_core.bags import STAIN_MODES
from slamags_core.config import METHODS, MIL_MODELS, PRESETS, get_preset, with_n_test
from slamags_core.embed import EMBEDDINGS
from slamags_core.validation import check_int


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slamags_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sweep", help="the paper's witness-rate experiment -> DIR/results.csv")
    s.add_argument("--preset", default="laptop", choices=sorted(PRESETS))
    s.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    s.add_argument("--methods", nargs="+", choices=METHODS,
                   help="default: all of " + " ".join(METHODS))
    s.add_argument("--mil", nargs="+", choices=MIL_MODELS, help="default: prototype abmil")
    s.add_argument("--witness-rates", nargs="+", type=float, help="default: 0.1 0.05 0.01 0.005")
    s.add_argument("--seeds", nargs="+", type=int, help="default: the preset's seeds")
    s.add_argument("--embeddings", nargs="+", choices=EMBEDDINGS,
                   help="ablation: downstream features, h (backbone) and/or z (projection, the "
                        "authors' code); default: the preset's (h)")
    s.add_argument("--stains", nargs="+", choices=STAIN_MODES,
                   help="ablation: per_cell (each cell its own slide's stain, the paper's bags) "
                        "and/or per_bag (one slide per bag, harder); default: the preset's")
    s.add_argument("--no-report", action="store_true",
                   help="skip the report at the end (run `report DIR` later)")
    s.add_argument("--device", default=None, help="auto | cuda | mps | cpu")
    s.add_argument("--n-test", type=int, default=None,
                   help="test bags per witness rate and seed (default: the preset's; "
                        "docs/power.md says how many a powered comparison needs)")
    s.add_argument("--shard", default=None, help="K/N: run grid cells K, K+N, ... only "
                   "(0 <= K < N; Slurm: $SLURM_ARRAY_TASK_ID/N); combine with `merge`")
    s.add_argument("--no-progress", action="store_true", help="hide progress bars")
    s.add_argument("--workers", type=int, default=1,
                   help="processes on this machine (e.g. its cores): bag sets rendered in "
                        "parallel, then the grid cells shared as shards, merged at the end; "
                        "each process gets cores / workers threads ($OMP_NUM_THREADS overrides)")
    s.add_argument("--render-only", action="store_true",
                   help="only render the grid's bag sets into the cache, then stop")

    t = sub.add_parser("pretrain", help="pretrain one encoder (one process, or torchrun for many)")
    t.add_argument("--preset", default="laptop", choices=sorted(PRESETS))
    t.add_argument("--method", required=True, choices=METHODS)
    t.add_argument("--witness-rate", type=float, default=None, help="default: the preset's")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=None, help="checkpoint root (default: the data "
                   "cache, where sweeps and notebooks find it; the run gets a sub-folder)")
    t.add_argument("--device", default=None, help="auto | cuda | mps | cpu")
    t.add_argument("--stop-after", type=int, default=None, help="stop after this many steps "
                   "(checkpointed; run again to continue)")
    t.add_argument("--compile", action="store_true", help="torch.compile the encoder (CUDA)")
    t.add_argument("--deterministic", action="store_true",
                   help="deterministic CUDA kernels: same seed, same weights (slower)")
    t.add_argument("--pool-placement", choices=("auto", "device", "host"), default=None)
    t.add_argument("--no-resume", action="store_true", help="start afresh")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    m = sub.add_parser("merge", help="combine sharded sweep results -> DIR/results.csv + report")
    m.add_argument("--out", required=True, type=Path, help="folder for the merged results")
    m.add_argument("sources", nargs="*", type=Path, help="sweep folders (default: --out)")
    m.add_argument("--partial", action="store_true", help="merge even if shards are missing")

    r = sub.add_parser("report", help="rewrite a sweep folder's results.md, plots and verdicts "
                                      "from its results.csv and predictions/")
    r.add_argument("out", type=Path, help="the sweep's output folder")
    r.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")

    g = sub.add_parser("generate", help="build (and cache) the preset's synthetic bags")
    g.add_argument("--preset", default="laptop", choices=sorted(PRESETS))
    g.add_argument("--witness-rates", nargs="+", type=float)
    g.add_argument("--seeds", nargs="+", type=int, help="default: the preset's seeds")
    g.add_argument("--n-test", type=int, default=None, help="as in sweep")

    w = sub.add_parser("site", help="execute every notebook and build the offline course site")
    w.add_argument("--out", required=True, type=Path, help="site folder (index.html at its root)")
    w.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="preset for the kernels (default: $SLAMAGS_PRESET or laptop)")
    w.add_argument("--sweep", type=Path, default=Path("outputs/sweep"),
                   help="sweep folder whose results fill the results page and notebook 08 "
                        "(default: outputs/sweep)")
    w.add_argument("--only", nargs="+", default=(), help="notebook name stems (default: all)")
    w.add_argument("--env", nargs="+", default=[], help="extra KEY=VALUE for the kernels")
    w.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    w.set_defaults(run=_site)

    n = sub.add_parser("notebooks", help="execute notebooks and write HTML copies")
    n.add_argument("--out", required=True, type=Path)
    n.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="preset for the kernels (default: $SLAMAGS_PRESET or laptop)")
    n.add_argument("--only", nargs="+", help="notebook name stems to run (default: all)")
    n.add_argument("--env", nargs="+", default=[], help="extra KEY=VALUE for the kernels")
    n.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    return p


def _site(args) -> None:
    from slamags_core.site import SiteConfig, build_site

    env = dict(kv.partition("=")[::2] for kv in args.env)
    build_site(SiteConfig(out_dir=args.out, preset=args.preset, sweep_dir=args.sweep,
                          only=tuple(args.only), timeout=args.timeout, env=env))


def _preset(args):
    """The named preset, with ``--n-test`` applied when given."""
    preset = get_preset(args.preset)
    return preset if args.n_test is None else with_n_test(preset, args.n_test)


def _generate(args) -> None:
    from slamags_core.pipeline import get_bags

    preset = _preset(args)
    for wr in args.witness_rates or preset.witness_rates:
        for seed in args.seeds if args.seeds is not None else preset.seeds:
            t0 = time.perf_counter()
            bs = get_bags(preset, wr, seed)  # the bag set the sweep reads for (wr, seed)
            print(f"WR {wr:g} seed {seed}: {bs.n_bags} bags, {len(bs.images)} cells "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)


def _report(args) -> None:
    import json

    from slamags_core.report import write_report
    from slamags_core.sweep import read_results

    rows = read_results(args.out / "results.csv")
    if not rows:
        raise SystemExit(f"no results in {args.out / 'results.csv'}")
    config = args.out / "config.json"
    preset = json.loads(config.read_text())["preset"] if config.exists() else {}
    headline = ((preset["pretrain"]["embedding"], preset["cells"]["stain"])
                if "pretrain" in preset and "stain" in preset.get("cells", {}) else None)
    analyses = write_report(rows, args.out, preset_name=preset.get("name", ""),
                            n_boot=args.n_boot, seed=args.seed, headline=headline)
    print(f"{args.out / 'results.md'}: {len(rows)} rows, "
          + (f"{len(analyses)} scorer variant(s) with verdicts" if analyses else
             "no per-bag predictions (no intervals or verdicts)"), flush=True)


def _notebooks(args) -> None:
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExecutePreprocessor

    nb_dir = Path(__file__).resolve().parents[1] / "notebooks"
    paths = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if p.stem in args.only]
    if not paths:
        raise SystemExit(f"no notebooks found in {nb_dir} (only={args.only})")
    if args.preset:
        os.environ["SLAMAGS_PRESET"] = args.preset
    for kv in args.env:
        key, _, value = kv.partition("=")
        os.environ[key] = value
    args.out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        t0 = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        ExecutePreprocessor(timeout=args.timeout).preprocess(nb, {"metadata": {"path": str(nb_dir)}})
        html, _ = HTMLExporter().from_notebook_node(nb)
        (args.out / f"{path.stem}.html").write_text(html)
        print(f"{path.name}: executed in {time.perf_counter() - t0:.1f} s -> "
              f"{args.out / (path.stem + '.html')}", flush=True)


def _pretrain(args) -> None:
    from slamags_core import distributed as D
    from slamags_core.pipeline import get_bags, get_pretrained

    preset = get_preset(args.preset)
    runtime = {"compile": args.compile or preset.pretrain.compile,
               "deterministic": args.deterministic or preset.pretrain.deterministic}
    if args.pool_placement:
        runtime["pool_placement"] = args.pool_placement
    preset = preset.replace(pretrain=dataclasses.replace(preset.pretrain, **runtime))
    ctx = D.setup()
    try:
        with D.main_first(ctx):  # rank 0 renders the bag set, the others open it
            bags = get_bags(preset, args.witness_rate, args.seed)
        t0 = time.perf_counter()
        res = get_pretrained(preset, bags, args.method, args.seed, device=args.device,
                             root=args.out, progress=not args.no_progress,
                             resume=not args.no_resume, stop_after=args.stop_after)
        if ctx.is_main:
            last = res.summaries[-1]
            print(f"{args.method}: step {last['step']} of {preset.pretrain.steps} on "
                  f"{ctx.world_size} process(es) in {time.perf_counter() - t0:.1f} s; "
                  f"loss {last.get('loss', float('nan')):.4f}; checkpoint {res.checkpoint}",
                  flush=True)
    finally:
        D.teardown()


def _worker_argv(args, argv: list[str]) -> list[str]:
    """This ``sweep`` command line without ``--workers``, ``--shard`` and the progress bar."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--workers", "--shard"):
            skip = True
        elif not a.startswith(("--workers=", "--shard=")) and a != "--no-progress":
            out.append(a)
    return [sys.executable, "-m", "slamags_core", *out, "--no-progress"]


def _tails(out: Path, n: int, lines: int = 8) -> str:
    """The last lines of every worker's log (what a failed worker said)."""
    return "\n".join(f"--- worker-{k}.log ---\n" + "\n".join(
        (out / f"worker-{k}.log").read_text(errors="replace").splitlines()[-lines:])
        for k in range(n) if (out / f"worker-{k}.log").exists())


def _sweep_workers(args, argv: list[str]) -> None:
    """``sweep --workers N``: N processes on this machine, the same results folder as one.

    First the grid's bag sets are rendered, witness rates dealt out to the N processes (no two
    render the same set); then process K runs grid cells K, K + N, ... (``--shard K/N``, every
    process reading the cached sets) and the shards are merged with the report. Each process
    gets ``cores // N`` threads (or ``$OMP_NUM_THREADS``). The numbers are those of one process
    with as many threads (CPU kernels may round differently with another thread count). Run
    the same command again to resume.
    """
    import subprocess

    from tqdm.auto import tqdm

    from slamags_core.sweep import check_sweep, merge_results, read_results, scorers, shard_name

    try:
        g = check_sweep(_preset(args), args.out, methods=args.methods, mil_models=args.mil,
                        witness_rates=args.witness_rates, seeds=args.seeds,
                        embeddings=args.embeddings, stains=args.stains)
    except ValueError as e:
        raise SystemExit(f"sweep refused: {e}") from None
    rates = g["witness_rates"]
    cells = len(g["stains"]) * len(rates) * len(g["seeds"]) * len(g["methods"])
    n = min(args.workers, cells)  # an empty shard would leave the merge a shard short
    total = cells // len(g["methods"]) * sum(len(scorers(m, e, g["mil_models"]))
                                             for m in g["methods"] for e in g["embeddings"])
    base = _worker_argv(args, argv)
    env = dict(os.environ)  # threads per worker: cores // N unless OMP_NUM_THREADS says
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    logs = [open(args.out / f"worker-{k}.log", "a") for k in range(n)]
    render: list = []
    procs: list = []
    try:
        rwr = [rates[k::n] for k in range(n) if rates[k::n]]  # witness rates per renderer
        render = [subprocess.Popen([*base, "--render-only", "--witness-rates", *map(str, wr)],
                                   stdout=logs[k], stderr=subprocess.STDOUT, env=env)
                  for k, wr in enumerate(rwr)]
        if any(p.wait() for p in render):
            raise SystemExit(f"rendering failed: see {args.out}/worker-*.log\n" + _tails(args.out, n))
        procs = [subprocess.Popen([*base, "--shard", f"{k}/{n}", "--no-report"],
                                  stdout=logs[k], stderr=subprocess.STDOUT, env=env)
                 for k in range(n)]
        files = [args.out / f"{shard_name((k, n))}.csv" for k in range(n)]
        with tqdm(total=total, desc=f"sweep ({n} workers)", unit="row",
                  disable=args.no_progress) as bar:
            while any(p.poll() is None for p in procs):
                time.sleep(5)
                bar.update(sum(len(read_results(f)) for f in files if f.exists()) - bar.n)
        if any(p.returncode for p in procs):
            raise SystemExit(f"a worker failed: see {args.out}/worker-*.log\n" + _tails(args.out, n))
    finally:
        for p in [*render, *procs]:  # Ctrl-C or an error: stop the workers too
            if p.poll() is None:
                p.terminate()
        for f in logs:
            f.close()
    rows = merge_results([args.out], args.out, allow_partial=False)
    print(f"{len(rows)} rows -> {args.out / 'results.csv'}", flush=True)


def _sweep(args, argv: list[str]) -> None:
    from slamags_core import distributed as D
    from slamags_core.sweep import parse_shard, run_sweep, shard_name

    if args.workers != 1:
        check_int(args.workers, "workers", ge=1)
        if args.shard or args.render_only or os.environ.get("WORLD_SIZE"):
            raise SystemExit("--workers runs its own shards on this machine: not with --shard, "
                             "--render-only or torchrun")
        return _sweep_workers(args, argv)
    shard = parse_shard(args.shard) if args.shard else None
    ctx = D.setup()
    try:
        rows = run_sweep(preset=_preset(args), out_dir=args.out, methods=args.methods,
                         mil_models=args.mil, witness_rates=args.witness_rates, seeds=args.seeds,
                         embeddings=args.embeddings, stains=args.stains, device=args.device,
                         progress=not args.no_progress, report=not args.no_report, shard=shard,
                         render_only=args.render_only)
        if ctx.is_main and args.render_only:
            print(f"bag sets in the cache (log: {args.out / 'sweep.log'})", flush=True)
        elif ctx.is_main:
            print(f"{len(rows)} rows -> {args.out / (shard_name(shard) + '.csv')}", flush=True)
    finally:
        D.teardown()


def _merge(args) -> None:
    from slamags_core.sweep import merge_results

    try:
        rows = merge_results(args.sources or [args.out], args.out, allow_partial=args.partial)
    except ValueError as e:  # mixed configurations, missing or conflicting shards
        raise SystemExit(f"merge refused: {e}") from None
    print(f"merged {len(rows)} rows -> {args.out / 'results.csv'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if getattr(args, "deterministic", False):
        # read by cuBLAS when CUDA starts: set it before anything touches the GPU
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if getattr(args, "run", None):   # subcommands that name their function (site)
        return args.run(args)
    if args.cmd == "sweep":
        _sweep(args, sys.argv[1:] if argv is None else list(argv))
    elif args.cmd == "pretrain":
        _pretrain(args)
    elif args.cmd == "merge":
        _merge(args)
    elif args.cmd == "report":
        _report(args)
    elif args.cmd == "generate":
        _generate(args)
    else:
        _notebooks(args)


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``python -m slamags_core {sweep,report,generate,notebooks} ...``.

    python -m slamags_core sweep --preset laptop --out outputs/sweep
    python -m slamags_core report outputs/sweep
    python -m slamags_core generate --preset laptop
    python -m slamags_core notebooks --out outputs/notebooks
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from slamags_core.bags import STAIN_MODES
from slamags_core.config import METHODS, MIL_MODELS, PRESETS, get_preset
from slamags_core.embed import EMBEDDINGS


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
    s.add_argument("--no-progress", action="store_true", help="hide progress bars")

    r = sub.add_parser("report", help="rewrite a sweep folder's results.md, plots and verdicts "
                                      "from its results.csv and predictions/")
    r.add_argument("out", type=Path, help="the sweep's output folder")
    r.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    r.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")

    g = sub.add_parser("generate", help="build (and cache) the preset's synthetic bags")
    g.add_argument("--preset", default="laptop", choices=sorted(PRESETS))
    g.add_argument("--witness-rates", nargs="+", type=float)

    n = sub.add_parser("notebooks", help="execute notebooks and write HTML copies")
    n.add_argument("--out", required=True, type=Path)
    n.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="preset for the kernels (default: $SLAMAGS_PRESET or laptop)")
    n.add_argument("--only", nargs="+", help="notebook name stems to run (default: all)")
    n.add_argument("--env", nargs="+", default=[], help="extra KEY=VALUE for the kernels")
    n.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    return p


def _generate(args) -> None:
    from slamags_core.bags import load_or_build_bags

    preset = get_preset(args.preset)
    for wr in args.witness_rates or preset.witness_rates:
        t0 = time.perf_counter()
        bags = dataclasses.replace(preset.bags, witness_rate=wr)
        bs = load_or_build_bags(preset.cells, bags)
        print(f"WR {wr:g}: {bs.n_bags} bags, {len(bs.images)} cells "
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


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.cmd == "sweep":
        from slamags_core.sweep import run_sweep

        run_sweep(preset=get_preset(args.preset), out_dir=args.out, methods=args.methods,
                  mil_models=args.mil, witness_rates=args.witness_rates, seeds=args.seeds,
                  embeddings=args.embeddings, stains=args.stains, device=args.device,
                  progress=not args.no_progress, report=not args.no_report)
    elif args.cmd == "report":
        _report(args)
    elif args.cmd == "generate":
        _generate(args)
    else:
        _notebooks(args)


if __name__ == "__main__":
    sys.exit(main())

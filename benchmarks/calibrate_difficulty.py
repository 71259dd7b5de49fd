"""Calibrate the synthetic data set's ``difficulty`` with baselines only (never SLAM-AGS).

For each difficulty on a grid, render slides of LYT (negative) and BLA (witness) cells at the
``laptop`` image size (40 px), each slide with its own stain, centre-crop them to the encoder
crop (32 px), split by slide into train/test and measure instance-level separability with:

(a) ``probe``: logistic regression on features ``h`` of an UNTRAINED encoder
    (``build_encoder(PretrainConfig())``, random init, eval mode) - how easy the classes are
    without any learning of the representation;
(b) ``pixels``: logistic regression on raw pixels (another learning-free reference);
(c) ``supervised``: the same encoder architecture trained from scratch WITH instance labels
    for a few epochs (Adam, flips and 90-degree rotations) - an oracle upper reference.

The target (issue 2): (c) clearly separable (AUC >= 0.9) while (a) is clearly not trivial
(AUC ~0.6-0.8). Usage::

    OMP_NUM_THREADS=1 python benchmarks/calibrate_difficulty.py [--grid 0 0.3 0.5 ...] [--out F]

prints a Markdown table (and writes it to ``--out`` if given).
"""
from __future__ import annotations

import argparse
import datetime
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from slamags_core.augment import center_crop, normalize, to_float
from slamags_core.config import CellConfig, PretrainConfig
from slamags_core.encoders import build_encoder
from slamags_core.synthetic import render_cells, sample_stain


def make_split(difficulty: float, n_slides: int, per_slide: int, cells: CellConfig,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Slides of half negatives / half witnesses, one stain each: images (N,H,W,3), labels (N,)."""
    rng = np.random.default_rng(seed)
    stains = sample_stain(rng, n_slides)
    types = [cells.negative_class] * (per_slide // 2) + [cells.witness_class] * (per_slide // 2)
    imgs = [render_cells(types, image_size=cells.image_size, difficulty=difficulty, rng=rng,
                         stain=s) for s in stains]
    labels = np.tile(np.repeat([0, 1], per_slide // 2), n_slides)
    return np.concatenate(imgs), labels


def to_input(images: np.ndarray, crop: int) -> torch.Tensor:
    """uint8 (N,H,W,3) -> normalised centre crops (N,3,crop,crop), as the pipeline embeds cells."""
    return normalize(to_float(center_crop(torch.from_numpy(images), crop)))


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auc": float(roc_auc_score(y, p)), "acc": float(accuracy_score(y, p > 0.5))}


def linear_probe(f_tr, y_tr, f_te, y_te) -> dict[str, float]:
    scaler = StandardScaler().fit(f_tr)
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(f_tr), y_tr)
    return scores(y_te, clf.predict_proba(scaler.transform(f_te))[:, 1])


@torch.no_grad()
def untrained_features(x: torch.Tensor, cfg: PretrainConfig, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    enc = build_encoder(cfg).eval()
    return torch.cat([enc(x[i:i + 512])[0] for i in range(0, len(x), 512)])


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and 90-degree rotation of a batch (B, 3, h, w)."""
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, int(torch.randint(4, (1,), generator=g)), dims=(-2, -1))


def supervised(x_tr, y_tr, x_te, y_te, cfg: PretrainConfig, epochs: int,
               seed: int) -> dict[str, float]:
    """Instance-supervised oracle: the encoder + a linear head trained with cell labels."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    enc = build_encoder(cfg)
    head = torch.nn.Linear(enc.feature_dim, 1)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    yt = torch.as_tensor(y_tr, dtype=torch.float32)
    for _ in range(epochs):
        enc.train()
        for idx in torch.randperm(len(x_tr), generator=g).split(64):
            logit = head(enc.backbone(_augment(x_tr[idx], g))).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    enc.eval()
    with torch.no_grad():
        p = torch.sigmoid(head(enc.backbone(x_te)).squeeze(1)).numpy()
    return scores(y_te, p)


def calibrate_one(d: float, args, cells: CellConfig, cfg: PretrainConfig) -> dict:
    row: dict = {"difficulty": d}
    for seed in range(args.seeds):
        im_tr, y_tr = make_split(d, args.train_slides, args.per_slide, cells, 1000 + seed)
        im_te, y_te = make_split(d, args.test_slides, args.per_slide, cells, 2000 + seed)
        x_tr, x_te = to_input(im_tr, cfg.crop_size), to_input(im_te, cfg.crop_size)
        res = {
            "probe": linear_probe(untrained_features(x_tr, cfg, seed).numpy(), y_tr,
                                  untrained_features(x_te, cfg, seed).numpy(), y_te),
            "pixels": linear_probe(x_tr.flatten(1).numpy(), y_tr, x_te.flatten(1).numpy(), y_te),
            "supervised": supervised(x_tr, y_tr, x_te, y_te, cfg, args.epochs, seed),
        }
        for name, r in res.items():
            for k, v in r.items():
                row.setdefault(f"{name}_{k}", []).append(v)
    return {k: (float(np.mean(v)) if isinstance(v, list) else v) for k, v in row.items()}


def table(rows: list[dict]) -> str:
    lines = ["| difficulty | untrained probe AUC | probe acc | raw-pixel LR AUC "
             "| supervised AUC | supervised acc |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['difficulty']:.2f} | {r['probe_auc']:.3f} | {r['probe_acc']:.3f} | "
                     f"{r['pixels_auc']:.3f} | {r['supervised_auc']:.3f} | "
                     f"{r['supervised_acc']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=float, nargs="+",
                   default=[0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    p.add_argument("--train-slides", type=int, default=24)
    p.add_argument("--test-slides", type=int, default=12)
    p.add_argument("--per-slide", type=int, default=100, help="cells per slide (half each class)")
    p.add_argument("--epochs", type=int, default=6, help="supervised training epochs")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cells, cfg = CellConfig(), PretrainConfig()
    rows = []
    for d in args.grid:
        t0 = time.perf_counter()
        rows.append(calibrate_one(d, args, cells, cfg))
        print(f"difficulty {d:.2f}: {json.dumps({k: round(v, 3) for k, v in rows[-1].items()})}"
              f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n{datetime.date.today()} image_size={cells.image_size} crop={cfg.crop_size} "
          f"encoder={cfg.encoder} width={cfg.width} {vars(args)}\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()

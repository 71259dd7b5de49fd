"""Bag-level calibration of ``CellConfig.difficulty`` with baselines only.

For each difficulty and witness rate (laptop preset, seed 0) this pretrains the SimCLR
*baseline*, then reports
  * ``oracle_inst_auroc``: a logistic-regression probe trained on the TRUE instance labels of the
    training bags' cells (an instance-supervised oracle), scored on test cells;
  * ``oracle_bag_auc``: bag AUC of that oracle's scores pooled per test bag as
    "mean of the top-k scores minus the bag median" (k = expected witnesses; the median removes
    the per-slide stain shift);
  * ``abmil_simclr_bag_auc``: gated ABMIL trained on bag labels over the SimCLR embeddings.
No SLAM-AGS score is computed. Usage::

    SLAMAGS_DATA_DIR=/tmp/calib python benchmarks/calibrate_bag_level.py 0.0 0.2 0.3 0.4
"""
import dataclasses
import json
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from slamags_core.config import get_preset
from slamags_core.metrics import bag_metrics
from slamags_core.mil import predict_bags, split_bags, train_mil
from slamags_core.pipeline import prepare_embeddings


def oracle_scores(bs, H):
    """Instance-label logistic-regression scores of every cell, fit on training-bag cells."""
    train = np.concatenate([bs.bag_cells(i) for i in bs.split_bags("train")])
    mu, sd = H[train].mean(0), H[train].std(0) + 1e-6
    clf = LogisticRegression(max_iter=3000, class_weight="balanced")
    clf.fit(((H[train] - mu) / sd).numpy(), bs.instance_labels[train])
    return clf.decision_function(((H - mu) / sd).numpy())


def calibrate(difficulty: float, witness_rate: float) -> dict:
    base = get_preset("laptop")
    preset = base.replace(cells=dataclasses.replace(base.cells, difficulty=difficulty))
    t0 = time.time()
    bs, H = prepare_embeddings(preset, "simclr", witness_rate, 0, progress=False)
    s = oracle_scores(bs, H)
    ids = bs.split_bags("test")
    y = bs.bag_labels[ids]
    cells = np.concatenate([bs.bag_cells(i) for i in ids])
    k = max(1, round(witness_rate * preset.bags.bag_size))
    pooled = [np.sort(s[bs.bag_cells(i)])[-k:].mean() - np.median(s[bs.bag_cells(i)]) for i in ids]
    train, val, test = (split_bags(bs, H, split)[1:] for split in ("train", "val", "test"))
    model, _ = train_mil("abmil", list(zip(*train)), list(zip(*val)), preset.mil, progress=False)
    prob, _, _ = predict_bags(model, test[0])
    return dict(difficulty=difficulty, witness_rate=witness_rate,
                oracle_inst_auroc=round(roc_auc_score(bs.instance_labels[cells], s[cells]), 3),
                oracle_bag_auc=round(roc_auc_score(y, pooled), 3),
                abmil_simclr_bag_auc=round(bag_metrics(y, prob)["bag_auc"], 3),
                seconds=round(time.time() - t0))


if __name__ == "__main__":
    for d in [float(x) for x in sys.argv[1:]] or [0.0, 0.2, 0.3, 0.4]:
        for wr in (0.1, 0.01):
            print(json.dumps(calibrate(d, wr)), flush=True)

"""Training, prediction and evaluation of MIL aggregators on frozen cell embeddings.

The aggregators themselves live in :mod:`slamags_core.aggregators`. This module trains them on
bag labels only (:func:`train_mil`), predicts bag probabilities and per-cell rankings
(:func:`predict_bags`), and runs the whole train / validate / test chain on a bag set's
embeddings (:func:`fit_evaluate`), which the sweep, the benchmarks and notebooks 05-07 call.

Training recipe (why each piece is there: docs/mil.md):

- mini-batches of ``cfg.batch_bags`` bags, padded to the longest bag and masked, Adam with a
  linear warm-up and cosine decay (the SLAM-AGS code: one bag per step, constant lr);
- optional instance dropout (a random share of each training bag's cells hidden per step);
- model selection and early stopping on the *validation* bags' cross-entropy (the SLAM-AGS code
  selects on training accuracy), over ``cfg.restarts`` independent initialisations: the state
  with the lowest validation loss over all restarts is returned;
- the reported abnormality ranking is oriented from the training bags' labels
  (:meth:`~slamags_core.aggregators.MILAggregator.orient`);
- every random draw (initialisation, batch order, dropout) comes from local generators seeded
  by ``cfg.seed``; the global RNGs are left untouched, and the same seed gives the same model
  bit for bit on the CPU.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slamags_core.aggregators import MILAggregator, build_mil, check_config
from slamags_core.config import MILConfig
from slamags_core.metrics import bag_metrics, retrieval_metrics

RANKINGS: tuple[str, ...] = ("abnormality", "attention")  # per-cell rankings; the first is reported


# ----------------------------------------------------------------------------------------------
# Input checks and padding
# ----------------------------------------------------------------------------------------------

def check_bags(bags: Sequence[Tensor], what: str = "bags") -> int:
    """Validate a list of bags and return their common embedding size ``D``.

    Raises:
        ValueError: no bags, a bag that is not 2-D, an empty bag, non-finite values, or bags
            whose embedding sizes differ (both bags are named).
    """
    if len(bags) == 0:
        raise ValueError(f"{what}: no bags given")
    dim = None
    for i, H in enumerate(bags):
        if not isinstance(H, Tensor) or H.dim() != 2:
            got = getattr(H, "shape", type(H))
            raise ValueError(f"{what}: bag {i} must be a 2-D tensor (N, D), got {got}")
        if H.shape[0] == 0:
            raise ValueError(f"{what}: bag {i} is empty (0 instances); every bag needs >= 1")
        if dim is None:
            dim = H.shape[1]
        elif H.shape[1] != dim:
            raise ValueError(f"{what}: bag {i} has embedding size {H.shape[1]} but bag 0 has {dim}")
        if not torch.isfinite(H).all():
            raise ValueError(f"{what}: bag {i} contains NaN or infinite values")
    return int(dim)


def _split_labelled(bags: Sequence[tuple[Tensor, int]], what: str) -> tuple[list[Tensor], list[int]]:
    Hs, ys = [], []
    for i, item in enumerate(bags):
        H, y = item
        if isinstance(y, bool) or int(y) != y or int(y) not in (0, 1):
            raise ValueError(f"{what}: bag {i} has label {y!r}; allowed labels: 0, 1")
        Hs.append(H)
        ys.append(int(y))
    check_bags(Hs, what)
    return Hs, ys


def pad_bags(bags: Sequence[Tensor], device: torch.device | str | None = None
             ) -> tuple[Tensor, Tensor]:
    """Stack bags of different sizes: ``X  # (B, N_max, D)`` zero-padded, ``mask  # (B, N_max)``."""
    n_max = max(H.shape[0] for H in bags)
    X = torch.zeros(len(bags), n_max, bags[0].shape[1], dtype=torch.float32, device=device)
    mask = torch.zeros(len(bags), n_max, dtype=torch.bool, device=device)
    for i, H in enumerate(bags):
        X[i, :len(H)] = H.to(device, torch.float32)
        mask[i, :len(H)] = True
    return X, mask


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

def _generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one purpose, derived from ``(seed, *stream)`` (no global state)."""
    state = np.random.SeedSequence([int(seed) % 2**63, *stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _init_model(name: str, in_dim: int, cfg: MILConfig, restart: int) -> MILAggregator:
    """Build the model with weights drawn from a forked RNG: the global RNG state is restored."""
    g = _generator(cfg.seed, 0, restart)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
        return build_mil(name, in_dim, cfg)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _drop_instances(mask: Tensor, p: float, g: torch.Generator) -> Tensor:
    """Hide each real cell with probability ``p``; every bag keeps at least its first kept cell."""
    if p <= 0:
        return mask
    keep = torch.rand(mask.shape, generator=g).to(mask.device) >= p
    kept = mask & keep
    empty = ~kept.any(1)
    if empty.any():  # a bag lost every cell: give it back its whole mask
        kept[empty] = mask[empty]
    return kept


def _compact(X: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Squeeze hidden cells out of a padded batch (the same bags, cheaper to train on).

    ``(B, N, D), (B, N)`` -> ``(B, L, D), (B, L)`` with ``L`` the largest number of real cells
    of a bag; each bag keeps its real cells in their order, padding goes to the end. After
    instance dropout about half of every bag is hidden: the aggregators ignore masked cells,
    so the loss is the same (up to float rounding) at about half the cost.
    """
    L = int(mask.sum(1).max())
    if L == mask.shape[1]:
        return X, mask
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :L]  # (B, L) real first
    return torch.gather(X, 1, order.unsqueeze(-1).expand(-1, -1, X.shape[-1])), \
        torch.gather(mask, 1, order)


def _loss(model: MILAggregator, X: Tensor, mask: Tensor, y: Tensor, cluster_weight: float) -> Tensor:
    out = model(X, mask, y=y)
    return F.cross_entropy(out.logits, y) + cluster_weight * out.aux_loss


@torch.no_grad()
def _val_metrics(model: MILAggregator, X: Tensor, mask: Tensor, y: Tensor, chunk: int = 64
                 ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (argmax) over bags."""
    model.eval()
    logits = torch.cat([model(X[i:i + chunk], mask[i:i + chunk]).logits
                        for i in range(0, len(X), chunk)])
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


def _fit_standardizer(model: MILAggregator, X: Tensor, mask: Tensor, enabled: bool) -> None:
    if not enabled:
        return
    with torch.no_grad():
        Xn = model.normalize(X, mask)[mask].double()  # (sum N, D), bag-centred if configured
        model.mu.copy_(Xn.mean(0).float())
        model.sigma.copy_(Xn.std(0, unbiased=False).clamp_min(1e-6).float())


def _fit_one(model: MILAggregator, train: tuple, val: tuple, cfg: MILConfig, restart: int,
             bar) -> tuple[float, dict, list[dict]]:
    """Train one initialisation; return its best validation loss, best state and history."""
    (Xtr, Mtr, ytr), (Xva, Mva, yva) = train, val
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(Xtr) / cfg.batch_bags)
    warm = min(cfg.warmup_epochs, cfg.epochs) * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, warm, total))
    g_order, g_drop = _generator(cfg.seed, 1, restart), _generator(cfg.seed, 2, restart)
    best_loss, best_state, since_best, history = math.inf, None, 0, []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        total_loss = 0.0
        for idx in torch.randperm(len(Xtr), generator=g_order).split(cfg.batch_bags):
            idx = idx.to(Xtr.device)
            X, mask = _compact(Xtr[idx], _drop_instances(Mtr[idx], cfg.instance_dropout, g_drop))
            loss = _loss(model, X, mask, ytr[idx], cfg.cluster_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite MIL loss {float(loss.detach())} at epoch {epoch}, restart {restart}, "
                    f"training bags {idx.tolist()}; check the embeddings for NaN/inf or lower cfg.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
        val_loss, val_acc = _val_metrics(model, Xva, Mva, yva)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_state, since_best = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        history.append(dict(restart=restart, epoch=epoch, train_loss=total_loss / len(Xtr),
                            val_loss=val_loss, val_acc=val_acc, best=improved,
                            lr=opt.param_groups[0]["lr"], seconds=time.perf_counter() - t0))
        if bar is not None:
            bar.update(1)
        if since_best >= cfg.patience:
            break
    return best_loss, best_state, history


def train_mil(
    name: str,
    train_bags: Sequence[tuple[Tensor, int]],
    val_bags: Sequence[tuple[Tensor, int]],
    cfg: MILConfig,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[MILAggregator, list[dict]]:
    """Train an MIL aggregator on bag labels; select the state with the lowest validation loss.

    Mini-batches of ``cfg.batch_bags`` padded bags; loss ``CE(logits, y) + cfg.cluster_weight *
    aux_loss``; Adam with ``cfg.warmup_epochs`` of linear warm-up then cosine decay over
    ``cfg.epochs``; instance dropout ``cfg.instance_dropout``. After every epoch the validation
    bags' mean cross-entropy is computed; each of ``cfg.restarts`` initialisations stops after
    ``cfg.patience`` epochs without improvement, and the state with the lowest validation loss
    over all restarts is restored; then the abnormality score is oriented on the training bags
    (:meth:`~slamags_core.aggregators.MILAggregator.orient`). Randomness comes from local
    generators seeded by ``cfg.seed`` (the global RNGs are not touched), so the same seed gives
    the same model on the CPU.

    Args:
        name: aggregator, one of :data:`slamags_core.aggregators.AGGREGATORS`.
        train_bags: ``(H  # (N_i, D), y_i)`` pairs, labels in {0, 1}.
        val_bags: the same for validation (model selection only).
        cfg: :class:`~slamags_core.config.MILConfig`.
        device: where to train (default CPU).
        progress: show a tqdm bar over epochs.

    Returns:
        The selected model (eval mode, on ``device``) and one dict per epoch and restart with
        ``restart``, ``epoch``, ``train_loss``, ``val_loss``, ``val_acc``, ``best`` (a new best
        of that restart), ``lr``, ``seconds``, plus ``selected`` (True on the epoch whose state
        was returned).

    Raises:
        ValueError: empty bag lists or bags, mismatched embedding sizes, NaN/inf embeddings,
            labels outside {0, 1}, or invalid config values.
        FloatingPointError: the loss became NaN/inf during training (names epoch and bags).
    """
    cfg = check_config(cfg)
    Htr, ytr = _split_labelled(train_bags, "train_bags")
    Hva, yva = _split_labelled(val_bags, "val_bags")
    if Htr[0].shape[1] != Hva[0].shape[1]:
        raise ValueError(f"val_bags have embedding size {Hva[0].shape[1]} "
                         f"but train_bags have {Htr[0].shape[1]}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    train = (*pad_bags(Htr, device), torch.tensor(ytr, device=device))
    val = (*pad_bags(Hva, device), torch.tensor(yva, device=device))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs * cfg.restarts, desc=f"MIL {name}", leave=False)
    best = (math.inf, None, None, -1)  # (val loss, state, model, restart)
    history: list[dict] = []
    for r in range(cfg.restarts):
        model = _init_model(name, Htr[0].shape[1], cfg, r).to(device)
        _fit_standardizer(model, train[0], train[1], cfg.standardize)  # statistics on `device`
        loss, state, hist = _fit_one(model, train, val, cfg, r, bar)
        history += hist
        if loss < best[0]:
            best = (loss, state, model, r)
    if bar is not None:
        bar.close()
    _, state, model, r = best
    model.load_state_dict(state)
    model.orient(*train)  # which instance score is "abnormal": from the training bag labels
    chosen = min((h for h in history if h["restart"] == r), key=lambda h: h["val_loss"])
    for h in history:
        h["selected"] = h is chosen
    return model.eval(), history


# ----------------------------------------------------------------------------------------------
# Prediction and evaluation
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def predict_bags(
    model: MILAggregator, bags: Sequence[Tensor], *, device: torch.device | str | None = None,
    batch_bags: int = 64,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Bag probabilities of the abnormal class and two per-cell rankings of every bag.

    Args:
        model: a trained aggregator (:func:`train_mil`).
        bags: embeddings ``H  # (N_i, D)`` per bag.
        device: where to run (default: the model's device).
        batch_bags: bags per forward pass.

    Returns:
        ``P(abnormal)  # (n_bags,)`` (softmax of the logits), one ``attention  # (N_i,)`` and one
        ``abnormality  # (N_i,)`` array per bag (see :class:`~slamags_core.aggregators.MILOutput`).

    Raises:
        ValueError: empty bag list or bags, mismatched embedding sizes, NaN/inf embeddings.
    """
    check_bags(bags)
    if device is None:
        device = next(model.parameters()).device
    model.to(device).eval()
    probs, attention, abnormality = [], [], []
    for i in range(0, len(bags), batch_bags):
        chunk = bags[i:i + batch_bags]
        X, mask = pad_bags(chunk, device)
        out = model(X, mask)
        probs.append(torch.softmax(out.logits, 1)[:, 1].cpu())
        for j, H in enumerate(chunk):
            attention.append(out.attention[j, :len(H)].cpu().numpy())
            abnormality.append(out.abnormality[j, :len(H)].cpu().numpy())
    return torch.cat(probs).double().numpy(), attention, abnormality


@dataclass
class MILResult:
    """What :func:`fit_evaluate` returns for one aggregator on one bag set.

    Attributes:
        model: the selected aggregator (eval mode).
        history: :func:`train_mil`'s per-epoch records.
        bag_ids: ids (into the bag set) of the evaluated bags.
        y: ``(n,)`` their labels.
        prob: ``(n,)`` ``P(abnormal)``.
        attention: one ``(N_i,)`` attention array per bag.
        abnormality: one ``(N_i,)`` abnormality array per bag (the reported ranking; which
            candidate score it is: ``model.ranking_name``).
        instance_labels: one ``(N_i,)`` 0/1 array per bag (1 = witness).
        metrics: ``bag_f1``, ``bag_auc``, and per ranking ``r`` in :data:`RANKINGS` the
            retrieval metrics ``{r}_topk_precision``, ``{r}_topk_recall``,
            ``{r}_instance_auroc``; the unprefixed ``topk_precision``, ``topk_recall``,
            ``instance_auroc`` repeat the abnormality ranking's (what the sweep reports).
        seconds: wall-clock time of training plus evaluation.
    """

    model: MILAggregator
    history: list[dict]
    bag_ids: np.ndarray
    y: np.ndarray
    prob: np.ndarray
    attention: list[np.ndarray]
    abnormality: list[np.ndarray]
    instance_labels: list[np.ndarray]
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0

    def ranking(self, kind: str = "abnormality") -> list[np.ndarray]:
        """The per-cell ranking scores of every bag: ``"abnormality"`` or ``"attention"``."""
        if kind not in RANKINGS:
            raise ValueError(f"unknown ranking {kind!r}; allowed: {RANKINGS}")
        return self.abnormality if kind == "abnormality" else self.attention


def split_bags(bagset, H: Tensor, split: str) -> tuple[np.ndarray, list[Tensor], list[int]]:
    """Bag ids, per-bag embeddings ``[H_i  # (N_i, D)]`` and labels of one split of a bag set.

    Raises:
        ValueError: when ``H`` does not have one row per cell of the bag set.
    """
    if len(H) != len(bagset.bag_index):
        raise ValueError(f"embeddings have {len(H)} rows but the bag set has "
                         f"{len(bagset.bag_index)} cells")
    ids = bagset.split_bags(split)
    return ids, [H[bagset.bag_cells(i)] for i in ids], [int(bagset.bag_labels[i]) for i in ids]


def evaluate_bags(model: MILAggregator, bags: Sequence[Tensor], y: Sequence[int],
                  instance_labels: Sequence[np.ndarray], *, topk_fraction: float = 0.4,
                  device: torch.device | str | None = None) -> tuple[dict, tuple]:
    """Metrics of a trained model on labelled bags: bag F1/AUC and both rankings' retrieval.

    Returns:
        ``(metrics, (prob, attention, abnormality))``; keys as in :attr:`MILResult.metrics`.
    """
    prob, attention, abnormality = predict_bags(model, bags, device=device)
    y = np.asarray(y)
    metrics = bag_metrics(y, prob)
    for kind, scores in zip(RANKINGS, (abnormality, attention)):
        r = retrieval_metrics(scores, instance_labels, y, topk_fraction=topk_fraction)
        metrics.update({f"{kind}_{k}": v for k, v in r.items()})
        if kind == RANKINGS[0]:
            metrics.update(r)
    return metrics, (prob, attention, abnormality)


def witness_ablation(model: MILAggregator, bags: Sequence[Tensor], y: Sequence[int],
                     instance_labels: Sequence[np.ndarray], *,
                     device: torch.device | str | None = None) -> dict:
    """Does the bag decision rest on the witnesses? Predict again with every witness deleted.

    A model that found the witnesses loses its positive bags when they are removed; a model
    that classifies by bag-level content (a slide's stain, the mix of ordinary cells) does not
    notice. Negative bags have no witnesses and are predicted unchanged; a bag made only of
    witnesses is left whole (it would be empty).

    Args:
        model: a trained aggregator.
        bags: ``[H_i  # (N_i, D)]`` the bags as evaluated.
        y: ``(n,)`` bag labels in {0, 1} (both present).
        instance_labels: one ``(N_i,)`` 0/1 array per bag, 1 = witness.
        device: where to predict.

    Returns:
        ``{"bag_auc_without_witnesses"`` (ROC AUC of ``P(abnormal)`` on the ablated bags),
        ``"max_prob_change"`` (largest ``|P_ablated - P|`` over bags)``}``.

    Raises:
        ValueError: mismatched lengths or an instance-label array not matching its bag.
    """
    if not len(bags) == len(y) == len(instance_labels):
        raise ValueError(f"got {len(bags)} bags, {len(y)} labels and {len(instance_labels)} "
                         f"instance label arrays; they must match")
    kept = []
    for i, (H, lab) in enumerate(zip(bags, instance_labels)):
        lab = np.asarray(lab)
        if lab.shape != (len(H),):
            raise ValueError(f"bag {i}: instance_labels have shape {lab.shape}, bag has {len(H)} cells")
        keep = lab == 0
        kept.append(H[torch.as_tensor(keep)] if keep.any() else H)
    prob = predict_bags(model, bags, device=device)[0]
    prob_ablated = predict_bags(model, kept, device=device)[0]
    return {"bag_auc_without_witnesses": bag_metrics(np.asarray(y), prob_ablated)["bag_auc"],
            "max_prob_change": float(np.abs(np.asarray(prob_ablated) - np.asarray(prob)).max())}


def fit_evaluate(name: str, bagset, H: Tensor, cfg: MILConfig, *, split: str = "test",
                 device: torch.device | str | None = None, progress: bool = False) -> MILResult:
    """Train an aggregator on a bag set's training bags, select on its validation bags, evaluate.

    The one train-and-evaluate chain of the project (sweep, benchmarks, notebooks 05-07):
    :func:`train_mil` on the ``"train"`` bags with model selection on the ``"val"`` bags, then
    bag F1/AUC and Top-K retrieval (K = ``cfg.topk_fraction`` of each bag) on ``split``. The
    reported retrieval metrics rank cells by *abnormality* (the model's attention score oriented by
    bag labels: see :mod:`slamags_core.aggregators`); the raw-attention ranking's metrics come
    alongside with an ``attention_`` prefix.

    Args:
        name: aggregator, one of :data:`slamags_core.aggregators.AGGREGATORS`.
        bagset: a :class:`~slamags_core.bags.BagSet` (splits, bag labels, instance labels).
        H: ``(N, D)`` embeddings of every cell of the bag set, row ``i`` for cell ``i``.
        cfg: MIL settings (its ``seed`` seeds the MIL training).
        split: the bags to evaluate (default ``"test"``).
        device: where to train and predict (default CPU).
        progress: show a bar over epochs.

    Raises:
        ValueError: embeddings that do not match the bag set, bad bags or labels (see
            :func:`train_mil`), or an evaluated split without a positive bag.
    """
    t0 = time.perf_counter()
    _, Htr, ytr = split_bags(bagset, H, "train")
    _, Hva, yva = split_bags(bagset, H, "val")
    ids, Hte, yte = split_bags(bagset, H, split)
    model, history = train_mil(name, list(zip(Htr, ytr)), list(zip(Hva, yva)), cfg,
                               device=device, progress=progress)
    inst = [np.asarray(bagset.instance_labels[bagset.bag_cells(i)]) for i in ids]
    metrics, (prob, att, abn) = evaluate_bags(model, Hte, yte, inst,
                                              topk_fraction=cfg.topk_fraction, device=device)
    return MILResult(model, history, ids, np.asarray(yte), prob, att, abn, inst, metrics,
                     time.perf_counter() - t0)

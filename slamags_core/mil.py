"""Multiple-instance learning (MIL) on frozen cell embeddings: aggregators and training.

A *bag* (one slide) is a matrix of cell embeddings ``H  # (N, D)`` with one label
(1 = abnormal, 0 = negative). Every aggregator maps ``H`` to two bag logits and a per-cell
weight ``attention  # (N,)`` that sums to 1 over the bag; the attention ranks cells for
attention-guided retrieval of witnesses (see :mod:`slamags_core.metrics`).

Aggregators (``AGGREGATORS``):

- ``"mean"``: mean pooling of instance features, a linear classifier; uniform attention 1/N.
- ``"max"``: instance-level max pooling (mi-Net style): an instance abnormality score
  ``s_n``, bag logits ``(0, max_n s_n)`` so ``P(abnormal) = sigmoid(max_n s_n)``; its
  "attention" is ``softmax_n(s_n)`` (same ranking as ``s``, sums to 1).
- ``"abmil"``: gated attention MIL (Ilse, Tomczak, Welling, "Attention-based Deep Multiple
  Instance Learning", ICML 2018): ``a = softmax_n(w^T (tanh(V h_n) * sigm(U h_n)))``,
  ``z = sum_n a_n h_n``.
- ``"prototype"``: prototype-aware attention MIL in the style of PAMIL (Liu et al., MICCAI
  2024), as adapted by the SLAM-AGS code: learnable prototypes per class, gated attention
  between prototypes and instances, one attention distribution per class, weight-normalised
  per-class heads, cross-entropy plus ``cluster_weight`` times clustering losses. The exact
  layer layout is our own reading of that description (see :class:`PrototypeMIL`).

Training (:func:`train_mil`): one bag per step, Adam, seeded; model selection and early
stopping on the *validation* bags' cross-entropy (the authors' code selects on training
accuracy); the best state is restored.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slamags_core.config import MILConfig
from slamags_core.utils import set_seed
from slamags_core.validation import check_float, check_int

AGGREGATORS: tuple[str, ...] = ("mean", "max", "abmil", "prototype")
N_CLASSES = 2  # class 0 = negative, class 1 = abnormal


@dataclass
class MILOutput:
    """What every aggregator returns for one bag.

    Attributes:
        logits: ``(2,)`` bag logits; class 1 = abnormal.
        attention: ``(N,)`` non-negative cell weights summing to 1 (uniform for ``mean``;
            ``softmax`` of the instance scores for ``max``; the abnormal class's attention
            for ``prototype``).
        aux_loss: scalar auxiliary loss (prototype clustering losses), ``0`` if none.
    """

    logits: Tensor
    attention: Tensor
    aux_loss: Tensor


class _Standardize(nn.Module):
    """Per-feature z-scoring with statistics set from the training bags (buffers, saved)."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.register_buffer("mu", torch.zeros(in_dim))
        self.register_buffer("sigma", torch.ones(in_dim))

    def forward(self, H: Tensor) -> Tensor:  # H (N, D)
        return (H - self.mu) / self.sigma


class _MILBase(nn.Module):
    """Shared pieces: input standardisation and an instance embedding ``ReLU(W h)``."""

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__()
        self.in_dim = in_dim
        self.standardize = _Standardize(in_dim)
        self.embed = nn.Sequential(nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU())

    def instances(self, H: Tensor) -> Tensor:
        if H.dim() != 2 or H.shape[0] == 0 or H.shape[1] != self.in_dim:
            raise ValueError(f"expected a non-empty bag of shape (N, {self.in_dim}), got {tuple(H.shape)}")
        return self.embed(self.standardize(H))  # (N, L)


class MeanMIL(_MILBase):
    """Mean pooling baseline: ``z = mean_n ReLU(W h_n)``, logits ``= C z``; attention 1/N."""

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        self.classifier = nn.Linear(cfg.hidden_dim, N_CLASSES)

    def forward(self, H: Tensor, y: int | None = None) -> MILOutput:
        Hl = self.instances(H)  # (N, L)
        n = Hl.shape[0]
        attention = Hl.new_full((n,), 1.0 / n)  # (N,)
        logits = self.classifier(Hl.mean(0))  # (2,)
        return MILOutput(logits, attention, Hl.new_zeros(()))


class MaxMIL(_MILBase):
    """Instance-level max pooling: ``s_n = c^T ReLU(W h_n)``, logits ``(0, max_n s_n)``.

    ``P(abnormal) = sigmoid(max_n s_n)``: a bag is abnormal iff its most abnormal cell is
    (the standard MIL assumption). Attention is ``softmax_n(s_n)``: the instance scores
    normalised to sum to 1, with the same ranking as ``s``.
    """

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        self.score = nn.Linear(cfg.hidden_dim, 1)

    def forward(self, H: Tensor, y: int | None = None) -> MILOutput:
        s = self.score(self.instances(H)).squeeze(-1)  # (N,)
        logits = torch.stack([s.new_zeros(()), s.max()])  # (2,)
        return MILOutput(logits, torch.softmax(s, 0), s.new_zeros(()))


class GatedAttentionMIL(_MILBase):
    """Gated attention MIL (Ilse, Tomczak, Welling, ICML 2018, eq. 9).

    ``a_n = softmax_n( w^T (tanh(V h_n) * sigm(U h_n)) )``, ``z = sum_n a_n h_n``,
    logits ``= C z``; ``h_n = ReLU(W x_n)`` is the instance embedding.
    """

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        L = cfg.hidden_dim
        self.V = nn.Linear(L, L)
        self.U = nn.Linear(L, L)
        self.w = nn.Linear(L, 1)
        self.classifier = nn.Linear(L, N_CLASSES)

    def forward(self, H: Tensor, y: int | None = None) -> MILOutput:
        Hl = self.instances(H)  # (N, L)
        e = self.w(torch.tanh(self.V(Hl)) * torch.sigmoid(self.U(Hl))).squeeze(-1)  # (N,)
        a = torch.softmax(e, 0)  # (N,)
        z = a @ Hl  # (L,)
        return MILOutput(self.classifier(z), a, Hl.new_zeros(()))


class PrototypeMIL(_MILBase):
    """Prototype-aware gated attention MIL, PAMIL-style (Liu et al., MICCAI 2024).

    With instance embeddings ``h_n = ReLU(W x_n)`` (L-d), ABMIL's gated instance code
    ``g_n = tanh(V h_n) * sigm(U h_n)`` and learnable prototypes ``p_{c,m}`` (``C = 2``
    classes x ``M`` per class, L-d) that replace ABMIL's single query vector ``w``:

    - gated prototype-instance attention, one distribution per class (each instance is
      scored by its best-matching prototype of the class, softmax over instances):
      ``a_{c,n} = softmax_n( max_m p_{c,m}^T g_n )``;
    - per-class bag vectors ``z_c = sum_n a_{c,n} h_n`` and weight-normalised per-class
      heads (Salimans & Kingma 2016): ``logit_c = g_c v_c^T z_c / |v_c| + b_c``;
    - clustering losses (``aux_loss``, weighted by ``cfg.cluster_weight`` in training):
      *compactness* ``sum_n a_{y,n} (1 - max_m cos(g_n, p_{y,m}))`` for the bag's class
      ``y`` (the cells the class-``y`` attention picks lie near a class-``y`` prototype;
      averaged over both classes when ``y`` is unknown) plus *separation*
      ``mean_{i,j} relu(cos(p_{0,i}, p_{1,j}))`` (prototypes of different classes apart).

    The exact layer layout is our reading of the SLAM-AGS code's description of PAMIL,
    not a copy of either code base. The returned attention is the abnormal class's
    ``a_{1,:}``.
    """

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        M = check_int(cfg.n_prototypes, "n_prototypes", ge=1)
        L = cfg.hidden_dim
        self.V = nn.Linear(L, L)
        self.U = nn.Linear(L, L)
        self.prototypes = nn.Parameter(torch.randn(N_CLASSES, M, L) / math.sqrt(L))
        self.head_v = nn.Parameter(torch.randn(N_CLASSES, L) / math.sqrt(L))  # (C, L)
        self.head_g = nn.Parameter(torch.ones(N_CLASSES))  # (C,)
        self.head_b = nn.Parameter(torch.zeros(N_CLASSES))  # (C,)

    def forward(self, H: Tensor, y: int | None = None) -> MILOutput:
        Hl = self.instances(H)  # (N, L)
        G = torch.tanh(self.V(Hl)) * torch.sigmoid(self.U(Hl))  # (N, L) gated instance code
        E = torch.einsum("nl,cml->cnm", G, self.prototypes)  # (C, N, M)
        A = torch.softmax(E.amax(-1), dim=1)  # (C, N) per-class attention
        Z = A @ Hl  # (C, L)
        W = self.head_g.unsqueeze(1) * F.normalize(self.head_v, dim=1)  # (C, L) weight norm
        logits = (W * Z).sum(-1) + self.head_b  # (2,)
        return MILOutput(logits, A[1], self._cluster_loss(G, A, y))

    def _cluster_loss(self, G: Tensor, A: Tensor, y: int | None) -> Tensor:
        Gn = F.normalize(G, dim=-1)  # (N, L)
        Pn = F.normalize(self.prototypes, dim=-1)  # (C, M, L)
        dist = 1.0 - torch.einsum("nl,cml->cnm", Gn, Pn).amax(-1)  # (C, N) to nearest prototype
        compact = (A * dist).sum(-1)  # (C,)
        compact = compact.mean() if y is None else compact[int(y)]
        separation = torch.relu(Pn[0] @ Pn[1].T).mean()
        return compact + separation


_MODELS = {"mean": MeanMIL, "max": MaxMIL, "abmil": GatedAttentionMIL, "prototype": PrototypeMIL}


def _check_config(cfg: MILConfig) -> MILConfig:
    """``cfg`` with every number validated (ValueError naming it) and made a plain int / float."""
    ints = {f: check_int(getattr(cfg, f), f, ge=1)
            for f in ("epochs", "hidden_dim", "n_prototypes", "patience")}
    return dataclasses.replace(
        cfg, **ints, seed=check_int(cfg.seed, "seed", ge=0), lr=check_float(cfg.lr, "lr", gt=0),
        weight_decay=check_float(cfg.weight_decay, "weight_decay", ge=0),
        cluster_weight=check_float(cfg.cluster_weight, "cluster_weight", ge=0),
        topk_fraction=check_float(cfg.topk_fraction, "topk_fraction", gt=0, le=1))


def build_mil(name: str, in_dim: int, cfg: MILConfig) -> nn.Module:
    """Build an MIL aggregator; ``forward(H  # (N, D), y=None) -> MILOutput``.

    Args:
        name: one of :data:`AGGREGATORS`.
        in_dim: embedding size ``D``.
        cfg: MIL settings (hidden size, prototypes per class).

    Raises:
        ValueError: for an unknown name or a non-positive size.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown MIL aggregator {name!r}; allowed: {AGGREGATORS}")
    return _MODELS[name](check_int(in_dim, "in_dim", ge=1), _check_config(cfg))


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
        if int(y) != y or int(y) not in (0, 1):
            raise ValueError(f"{what}: bag {i} has label {y!r}; allowed labels: 0, 1")
        Hs.append(H)
        ys.append(int(y))
    check_bags(Hs, what)
    return Hs, ys


def _fit_standardizer(model: nn.Module, Hs: Sequence[Tensor], enabled: bool) -> None:
    if not enabled:
        return
    X = torch.cat(list(Hs)).double()  # (sum N, D)
    model.standardize.mu.copy_(X.mean(0).float())
    model.standardize.sigma.copy_(X.std(0, unbiased=False).clamp_min(1e-6).float())


def _bag_loss(model: nn.Module, H: Tensor, y: int, cluster_weight: float) -> tuple[Tensor, Tensor]:
    out = model(H, y=y)
    ce = F.cross_entropy(out.logits.unsqueeze(0), torch.tensor([y], device=H.device))
    return ce + cluster_weight * out.aux_loss, out.logits


@torch.no_grad()
def _evaluate(model: nn.Module, Hs: Sequence[Tensor], ys: Sequence[int]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (argmax) over bags."""
    model.eval()
    ce, correct = 0.0, 0
    for H, y in zip(Hs, ys):
        logits = model(H).logits
        ce += float(F.cross_entropy(logits.unsqueeze(0), torch.tensor([y], device=H.device)))
        correct += int(int(logits.argmax()) == y)
    return ce / len(Hs), correct / len(Hs)


def train_mil(
    name: str,
    train_bags: Sequence[tuple[Tensor, int]],
    val_bags: Sequence[tuple[Tensor, int]],
    cfg: MILConfig,
    *,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[nn.Module, list[dict]]:
    """Train an MIL aggregator one bag per step with Adam; select the model on validation loss.

    Each epoch visits the training bags in a seeded random order; the loss of a bag is
    ``CE(logits, y) + cfg.cluster_weight * aux_loss``. After each epoch the validation bags'
    mean cross-entropy is computed; the state with the lowest validation loss is kept and
    restored at the end, and training stops after ``cfg.patience`` epochs without
    improvement. (The SLAM-AGS code selects on training accuracy, which rewards overfitting.)
    Initialisation and bag order are seeded with ``cfg.seed`` through
    :func:`~slamags_core.utils.set_seed` (this reseeds the global RNGs), so the same seed gives
    the same model on CPU.

    Args:
        name: aggregator, one of :data:`AGGREGATORS`.
        train_bags: ``(H  # (N_i, D), y_i)`` pairs, labels in {0, 1}.
        val_bags: the same for validation (model selection only).
        cfg: :class:`~slamags_core.config.MILConfig`.
        device: where to train (default CPU).
        progress: show a tqdm bar over epochs.

    Returns:
        The trained model (eval mode, on ``device``) and one dict per epoch with ``epoch``,
        ``train_loss``, ``val_loss``, ``val_acc``, ``best`` (new best state) and ``seconds``.

    Raises:
        ValueError: empty bag lists or bags, mismatched embedding sizes, labels outside {0, 1},
            or invalid epochs / patience / lr.
    """
    cfg = _check_config(cfg)
    Htr, ytr = _split_labelled(train_bags, "train_bags")
    Hva, yva = _split_labelled(val_bags, "val_bags")
    if Htr[0].shape[1] != Hva[0].shape[1]:
        raise ValueError(f"val_bags have embedding size {Hva[0].shape[1]} "
                         f"but train_bags have {Htr[0].shape[1]}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = set_seed(cfg.seed)
    model = build_mil(name, Htr[0].shape[1], cfg)
    _fit_standardizer(model, Htr, cfg.standardize)
    model.to(device)
    Htr = [H.to(device, torch.float32) for H in Htr]
    Hva = [H.to(device, torch.float32) for H in Hva]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return _fit(model, opt, (Htr, ytr), (Hva, yva), cfg, gen, progress)


def _fit(model, opt, train, val, cfg: MILConfig, gen: torch.Generator, progress: bool):
    (Htr, ytr), (Hva, yva) = train, val
    best_loss, best_state, since_best, history = math.inf, None, 0, []
    epochs = range(cfg.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="MIL", leave=False)
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for i in torch.randperm(len(Htr), generator=gen).tolist():
            loss, _ = _bag_loss(model, Htr[i], ytr[i], cfg.cluster_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite MIL loss {float(loss.detach())} at epoch {epoch}, "
                                         f"training bag {i}; check the embeddings for NaN/inf")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        val_loss, val_acc = _evaluate(model, Hva, yva)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_state, since_best = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        history.append(dict(epoch=epoch, train_loss=total / len(Htr), val_loss=val_loss,
                            val_acc=val_acc, best=improved, seconds=time.perf_counter() - t0))
        if since_best >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history


@torch.no_grad()
def predict_bags(
    model: nn.Module, bags: Sequence[Tensor], *, device: torch.device | str | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Bag probabilities of the abnormal class and per-cell attention.

    Args:
        model: a trained aggregator from :func:`build_mil` / :func:`train_mil`.
        bags: embeddings ``H  # (N_i, D)`` per bag.
        device: where to run (default: the model's device).

    Returns:
        ``P(abnormal)  # (n_bags,)`` (softmax of the logits) and one ``attention  # (N_i,)``
        array per bag.

    Raises:
        ValueError: empty bag list or bags, mismatched embedding sizes.
    """
    check_bags(bags)
    if device is None:
        device = next(model.parameters()).device
    model.to(device).eval()
    probs, attentions = [], []
    for H in bags:
        out = model(H.to(device, torch.float32))
        probs.append(float(torch.softmax(out.logits, 0)[1]))
        attentions.append(out.attention.detach().cpu().numpy())
    return np.asarray(probs, dtype=np.float64), attentions

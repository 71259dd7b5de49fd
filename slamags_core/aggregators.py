"""MIL aggregators: a bag of cell embeddings -> bag logits, attention and abnormality scores.

A *bag* (one slide) is a matrix of cell embeddings ``X  # (N, D)`` with one label (1 = abnormal,
0 = negative). Every aggregator takes a padded batch ``X  # (B, N, D)`` with a boolean
``mask  # (B, N)`` (True = a real cell), or a single bag ``(N, D)``, and returns a
:class:`MILOutput`: two bag logits, a per-cell *attention* that sums to 1 over each bag, and a
per-cell *abnormality* score. Layout after torchmil: the models share one public base class,
:class:`MILAggregator` (input normalisation, instance embedding, masking), and one gated-attention
module, :class:`GatedAttention`; training and prediction live in :mod:`slamags_core.mil`.

Aggregators (``AGGREGATORS``):

- ``"mean"``: mean pooling, a linear classifier; uniform attention ``1/N``.
- ``"max"``: instance-level max pooling (mi-Net style): an instance abnormality score ``s_n``,
  bag logits ``(0, max_n s_n)``; attention ``softmax_n(s_n)``.
- ``"abmil"``: gated attention MIL (Ilse, Tomczak, Welling, ICML 2018, eq. 9).
- ``"prototype"``: prototype-aware gated attention in the style of PAMIL (Liu et al., MICCAI
  2024) as adapted by the SLAM-AGS code (see :class:`PrototypeMIL`).

Attention versus abnormality. Attention is *unsigned*: a model may attend to the most typical
negative cells and still classify well (the prototype model, with one attention per class, often
routes the evidence through the *normal* class's attention: it attends to the witnesses with a
head that votes against "normal", and the abnormal class's attention then points at negatives).
Every aggregator therefore also scores each cell with a few *candidate* instance scores: each
cell's vote for "abnormal" under the bag classifier, ``+-v`` with ``v_n = (c_1 - c_0)^T h_n``
(mean pooling, ABMIL, and the prototype model's two heads), then the pre-softmax attention
logits of each attention with both signs (``+e, -e`` for ABMIL; ``+e1, -e1, +e0, -e0`` for the
prototype model), and the instance logit ``s`` for max pooling. After training,
:meth:`MILAggregator.orient` picks, from the *bag labels of the training bags only*, the
candidate whose per-bag maximum best separates positive from negative bags (ROC AUC; under the
standard MIL assumption a positive bag holds at least one abnormal cell, so a score that seeks
abnormal cells has a larger maximum there). That oriented score is
:attr:`MILOutput.abnormality`, the ranking the sweep reports; ranking by it equals ranking by the
chosen candidate (or its reverse). The votes come first, so they win ties (at WR 10% every
candidate's maximum may separate the training bags perfectly): on oracle features they rank
witnesses at a within-bag AUROC of 0.98 where the attention reaches 0.85 (docs/mil.md). An
earlier measurement found "attention x vote" worse than attention alone (docs/mil.md).

Input normalisation (both optional, :class:`~slamags_core.config.MILConfig`): ``bag_center``
subtracts every bag's per-feature median (a slide-level offset such as its stain cannot be read
any more; witnesses stay outliers of their bag), then ``standardize`` z-scores the features with
statistics of the training cells.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slamags_core.config import MILConfig
from slamags_core.validation import check_float, check_int

AGGREGATORS: tuple[str, ...] = ("mean", "max", "abmil", "prototype")
N_CLASSES = 2  # class 0 = negative, class 1 = abnormal


@dataclass
class MILOutput:
    """What every aggregator returns (leading ``B`` absent for a single ``(N, D)`` bag).

    Attributes:
        logits: ``(B, 2)`` bag logits; class 1 = abnormal.
        attention: ``(B, N)`` non-negative cell weights summing to 1 over each bag's real cells
            (0 on padding): uniform for ``mean``, ``softmax`` of the instance scores for
            ``max``, the abnormal class's attention for ``prototype``.
        abnormality: ``(B, N)`` the oriented instance score (see the module docstring):
            higher = more abnormal; padding gets ``-inf``. This is the ranking the sweep reports.
        candidates: ``(B, K, N)`` every candidate instance score (names in
            :attr:`MILAggregator.candidate_names`); ``abnormality`` is one of them.
        aux_loss: scalar auxiliary loss (prototype clustering losses), ``0`` if none.
    """

    logits: Tensor
    attention: Tensor
    abnormality: Tensor
    aux_loss: Tensor
    candidates: Tensor


def masked_softmax(e: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim restricted to ``mask`` (padding gets weight 0)."""
    return torch.softmax(e.masked_fill(~mask, -math.inf), dim=-1)


def masked_median(x: Tensor, mask: Tensor) -> Tensor:
    """Per-bag lower median over the real cells: ``x  # (B, N, ...)`` -> ``(B, 1, ...)``."""
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - 2)))
    return torch.nanmedian(x.masked_fill(~m, math.nan), dim=1, keepdim=True).values


class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al., ICML 2018, eq. 9), shared by ABMIL and prototypes.

    ``g_n = tanh(V h_n) * sigm(U h_n)`` (the tanh branch proposes, the sigmoid branch gates) and
    one score per query ``e_{n,q} = w_q^T g_n (+ b_q)``. ABMIL has one learned query; the
    prototype model's prototypes are its queries (without bias).

    Args:
        in_dim: instance feature size ``L``.
        hidden_dim: gated code size.
        n_queries: number of queries ``Q``.
        bias: add a learned bias to each query's score.
        query_init: std of the queries' initial weights; ``0`` starts with equal scores
            (uniform attention: training starts from mean pooling).
    """

    def __init__(self, in_dim: int, hidden_dim: int, n_queries: int = 1, *, bias: bool = True,
                 query_init: float = 0.0):
        super().__init__()
        self.V = nn.Linear(in_dim, hidden_dim)
        self.U = nn.Linear(in_dim, hidden_dim)
        self.w = nn.Linear(hidden_dim, n_queries, bias=bias)
        with torch.no_grad():
            self.w.weight.normal_(0.0, query_init) if query_init > 0 else self.w.weight.zero_()
            if bias:
                self.w.bias.zero_()

    def gated(self, h: Tensor) -> Tensor:
        """``g = tanh(V h) * sigm(U h)``: ``(..., N, L)`` -> ``(..., N, hidden)``."""
        return torch.tanh(self.V(h)) * torch.sigmoid(self.U(h))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Scores ``e  # (..., N, Q)`` and the gated code ``g  # (..., N, hidden)``."""
        g = self.gated(h)
        return self.w(g), g


class MILAggregator(nn.Module):
    """Base class of every aggregator: input checks, normalisation, instance embedding, masking.

    Subclasses set :attr:`candidate_names` and implement :meth:`pool` on instance features
    ``h_n = ReLU(W x_n)``, returning ``(logits, attention, candidates, aux_loss)``. ``forward``
    accepts a single bag ``(N, D)`` or a padded batch ``(B, N, D)`` with ``mask  # (B, N)``.

    Args:
        in_dim: embedding size ``D``.
        cfg: MIL settings (``hidden_dim``, ``bag_center``, ...).
    """

    candidate_names: tuple[str, ...] = ()

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__()
        self.in_dim = in_dim
        self.bag_center = bool(cfg.bag_center)
        self.register_buffer("mu", torch.zeros(in_dim))      # z-scoring statistics, set by
        self.register_buffer("sigma", torch.ones(in_dim))    # training (saved with the model)
        self.register_buffer("rank_index", torch.zeros((), dtype=torch.long))  # set by orient()
        self.embed = nn.Sequential(nn.Linear(in_dim, cfg.hidden_dim), nn.ReLU())

    @property
    def ranking_name(self) -> str:
        """Name of the candidate score reported as abnormality (e.g. ``"+e"``)."""
        return self.candidate_names[int(self.rank_index)]

    def normalize(self, X: Tensor, mask: Tensor) -> Tensor:
        """Bag centring (optional) then z-scoring: ``(B, N, D)`` -> ``(B, N, D)``."""
        if self.bag_center:
            X = X - masked_median(X, mask)
        return ((X - self.mu) / self.sigma).masked_fill(~mask.unsqueeze(-1), 0.0)

    def forward(self, X: Tensor, mask: Tensor | None = None, y: Tensor | int | None = None
                ) -> MILOutput:
        """Bag logits, attention and abnormality of a bag ``(N, D)`` or a batch ``(B, N, D)``.

        Args:
            X: embeddings; a single bag or a padded batch.
            mask: ``(B, N)`` bool, True = real cell (default: all real).
            y: bag label(s), used only by auxiliary losses (prototype clustering).

        Raises:
            ValueError: wrong shape or embedding size, an empty bag, a bad mask.
        """
        single = X.dim() == 2
        if single:
            X = X.unsqueeze(0)
            mask = None if mask is None else mask.reshape(1, -1)
        if X.dim() != 3 or X.shape[1] == 0 or X.shape[2] != self.in_dim:
            raise ValueError(f"expected a non-empty bag (N, {self.in_dim}) or batch "
                             f"(B, N, {self.in_dim}), got {tuple(X.shape)}")
        if mask is None:
            mask = torch.ones(X.shape[:2], dtype=torch.bool, device=X.device)
        if mask.shape != X.shape[:2] or mask.dtype != torch.bool or not mask.any(1).all():
            raise ValueError(f"mask must be bool {tuple(X.shape[:2])} with >= 1 real cell per bag")
        if y is not None:
            y = torch.as_tensor(y, device=X.device).reshape(-1)
        h = self.embed(self.normalize(X, mask))  # (B, N, L)
        logits, attention, cand, aux = self.pool(h, mask, y)
        cand = cand.masked_fill(~mask.unsqueeze(1), -math.inf)  # (B, K, N)
        out = MILOutput(logits, attention, cand[:, self.rank_index], aux, cand)
        if single:
            out = MILOutput(out.logits[0], out.attention[0], out.abnormality[0], aux, cand[0])
        return out

    def pool(self, h: Tensor, mask: Tensor, y: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # pragma: no cover
        """``(logits (B, 2), attention (B, N), candidates (B, K, N), aux_loss ())``."""
        raise NotImplementedError

    @torch.no_grad()
    def orient(self, X: Tensor, mask: Tensor, y: Tensor) -> dict[str, float]:
        """Choose the abnormality score from bag labels (training bags; no instance labels).

        For each candidate score, the ROC AUC of its per-bag maximum against the bag labels;
        the candidate with the largest AUC becomes :attr:`MILOutput.abnormality` (ties: the
        first, i.e. the un-negated abnormal-class score).

        Args:
            X: ``(B, N, D)`` padded bags; mask: ``(B, N)``; y: ``(B,)`` labels in {0, 1}.

        Returns:
            ``{candidate name: AUC}``.

        Raises:
            ValueError: when ``y`` does not hold both labels.
        """
        y = y.reshape(-1).long()
        n1, n0 = int(y.sum()), int((1 - y).sum())
        if n1 == 0 or n0 == 0:
            raise ValueError("orient() needs positive and negative bags")
        was_training = self.training
        self.eval()
        top = torch.cat([self(X[i:i + 64], mask[i:i + 64]).candidates.amax(-1)
                         for i in range(0, len(X), 64)])  # (B, K)
        self.train(was_training)
        # AUC = P(max in a positive bag > max in a negative bag), ties count 1/2
        diff = top[y == 1].unsqueeze(1) - top[y == 0].unsqueeze(0)  # (n1, n0, K)
        auc = ((diff > 0).double() + 0.5 * (diff == 0).double()).mean((0, 1))  # (K,)
        self.rank_index.fill_(int(torch.argmax(auc)))  # first maximum on ties
        return {name: float(v) for name, v in zip(self.candidate_names, auc)}


class MeanMIL(MILAggregator):
    """Mean pooling: ``z = mean_n h_n``, logits ``= C z``; attention ``1/N``.

    Candidates ``+-v_n`` with ``v_n = (c_1 - c_0)^T h_n`` (the cell's value under the classifier:
    ``logit_1 - logit_0 = mean_n v_n + const``).
    """

    candidate_names = ("+v", "-v")

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        self.classifier = nn.Linear(cfg.hidden_dim, N_CLASSES)

    def pool(self, h, mask, y):
        a = mask.float() / mask.sum(1, keepdim=True)  # (B, N)
        logits = self.classifier(torch.einsum("bn,bnl->bl", a, h))  # (B, 2)
        v = h @ (self.classifier.weight[1] - self.classifier.weight[0])  # (B, N)
        return logits, a, torch.stack([v, -v], 1), h.new_zeros(())


class MaxMIL(MILAggregator):
    """Instance-level max pooling: ``s_n = c^T h_n``, logits ``(0, max_n s_n)``.

    ``P(abnormal) = sigmoid(max_n s_n)``: a bag is abnormal iff its most abnormal cell is (the
    standard MIL assumption). Attention ``softmax_n(s_n)``; the only candidate is ``s`` itself
    (only the maximum enters the logit, so ``s`` is the model's own abnormality score).
    """

    candidate_names = ("s",)

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        self.score = nn.Linear(cfg.hidden_dim, 1)

    def pool(self, h, mask, y):
        s = self.score(h).squeeze(-1).masked_fill(~mask, -math.inf)  # (B, N)
        top = s.amax(1)
        logits = torch.stack([torch.zeros_like(top), top], dim=1)  # (B, 2)
        return logits, masked_softmax(s, mask), s.unsqueeze(1), h.new_zeros(())


class GatedAttentionMIL(MILAggregator):
    """Gated attention MIL (Ilse, Tomczak, Welling, ICML 2018, eq. 9).

    ``e_n = w^T (tanh(V h_n) * sigm(U h_n))``, ``a = softmax_n(e)``, ``z = sum_n a_n h_n``,
    logits ``= C z``. ``w`` starts at 0 (uniform attention: training starts from mean pooling)
    unless ``cfg.query_init > 0``. Candidates ``+v, -v`` with ``v_n = (c_1 - c_0)^T h_n``, the
    cell's vote for "abnormal" under the bag classifier (``logit_1 - logit_0 = sum_n a_n v_n +
    const``: attention decides how much each vote counts), then ``+e, -e``.
    """

    candidate_names = ("+v", "-v", "+e", "-e")

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        self.attention = GatedAttention(cfg.hidden_dim, cfg.hidden_dim, 1,
                                        query_init=cfg.query_init)
        self.classifier = nn.Linear(cfg.hidden_dim, N_CLASSES)

    def pool(self, h, mask, y):
        e = self.attention(h)[0].squeeze(-1)  # (B, N)
        a = masked_softmax(e, mask)  # (B, N)
        logits = self.classifier(torch.einsum("bn,bnl->bl", a, h))  # (B, 2)
        v = h @ (self.classifier.weight[1] - self.classifier.weight[0])  # (B, N) votes
        return logits, a, torch.stack([v, -v, e, -e], 1), h.new_zeros(())


class PrototypeMIL(MILAggregator):
    """Prototype-aware gated attention MIL, PAMIL-style (Liu et al., MICCAI 2024).

    With instance features ``h_n``, the gated code ``g_n = tanh(V h_n) * sigm(U h_n)``
    (:class:`GatedAttention`) and learnable prototypes ``p_{c,m}`` (``C = 2`` classes x ``M``
    per class) as the attention queries:

    - one attention distribution per class, each cell scored by its best-matching prototype:
      ``e_{c,n} = max_m p_{c,m}^T g_n``, ``a_{c,n} = softmax_n(e_{c,n})``;
    - per-class bag vectors ``z_c = sum_n a_{c,n} h_n`` and weight-normalised heads (Salimans &
      Kingma 2016): ``logit_c = g_c v_c^T z_c / |v_c| + b_c``;
    - clustering losses (``aux_loss``, weighted by ``cfg.cluster_weight`` in training):
      *compactness* ``sum_n a_{y,n} (1 - max_m cos(g_n, p_{y,m}))`` for the bag's class ``y``
      (averaged over both classes when ``y`` is unknown) plus *separation*
      ``mean_{i,j} relu(cos(p_{0,i}, p_{1,j}))``; averaged over the bags of a batch.

    The layer layout is our reading of the SLAM-AGS code's description of PAMIL, not a copy of
    either code base. Attention is the abnormal class's ``a_{1,:}``; candidates ``+v, -v`` with
    ``v_n = (W_1 - W_0)^T h_n`` (the cell's vote for "abnormal" under the two heads), then
    ``+e1, -e1, +e0, -e0`` (either class's attention may end up seeking the witnesses).
    """

    candidate_names = ("+v", "-v", "+e1", "-e1", "+e0", "-e0")

    def __init__(self, in_dim: int, cfg: MILConfig):
        super().__init__(in_dim, cfg)
        L, M = cfg.hidden_dim, check_int(cfg.n_prototypes, "n_prototypes", ge=1)
        self.n_prototypes = M
        self.attention = GatedAttention(L, L, N_CLASSES * M, bias=False,
                                        query_init=max(cfg.query_init, 1.0 / math.sqrt(L)))
        self.head_v = nn.Parameter(torch.randn(N_CLASSES, L) / math.sqrt(L))  # (C, L)
        self.head_g = nn.Parameter(torch.ones(N_CLASSES))  # (C,)
        self.head_b = nn.Parameter(torch.zeros(N_CLASSES))  # (C,)

    @property
    def prototypes(self) -> Tensor:
        """``(C, M, L)`` prototypes (the gated attention's queries)."""
        return self.attention.w.weight.view(N_CLASSES, self.n_prototypes, -1)

    def pool(self, h, mask, y):
        E, G = self.attention(h)  # (B, N, C*M), (B, N, L)
        E = E.view(*E.shape[:2], N_CLASSES, self.n_prototypes).amax(-1).transpose(1, 2)  # (B, C, N)
        A = masked_softmax(E, mask.unsqueeze(1))  # (B, C, N)
        Z = A @ h  # (B, C, L)
        W = self.head_g.unsqueeze(1) * F.normalize(self.head_v, dim=1)  # (C, L) weight norm
        logits = (W * Z).sum(-1) + self.head_b  # (B, 2)
        v = h @ (W[1] - W[0])  # (B, N) votes
        cand = torch.stack([v, -v, E[:, 1], -E[:, 1], E[:, 0], -E[:, 0]], 1)  # (B, 6, N)
        return logits, A[:, 1], cand, self._cluster_loss(G, A, mask, y)

    def _cluster_loss(self, G: Tensor, A: Tensor, mask: Tensor, y: Tensor | None) -> Tensor:
        Gn = F.normalize(G, dim=-1)  # (B, N, L)
        Pn = F.normalize(self.prototypes, dim=-1)  # (C, M, L)
        dist = 1.0 - torch.einsum("bnl,cml->bcnm", Gn, Pn).amax(-1)  # (B, C, N) to nearest prototype
        compact = (A * dist.masked_fill(~mask.unsqueeze(1), 0.0)).sum(-1)  # (B, C)
        if y is None:
            compact = compact.mean(1)
        else:
            compact = compact.gather(1, y.long().view(-1, 1)).squeeze(1)  # (B,)
        separation = torch.relu(Pn[0] @ Pn[1].T).mean()
        return compact.mean() + separation


_MODELS = {"mean": MeanMIL, "max": MaxMIL, "abmil": GatedAttentionMIL, "prototype": PrototypeMIL}


def build_mil(name: str, in_dim: int, cfg: MILConfig) -> MILAggregator:
    """Build an MIL aggregator; ``forward(X  # (N, D) or (B, N, D), mask=None, y=None)``.

    Args:
        name: one of :data:`AGGREGATORS`.
        in_dim: embedding size ``D``.
        cfg: MIL settings (hidden size, prototypes per class, bag centring, query init).

    Raises:
        ValueError: for an unknown name or a non-positive size.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown MIL aggregator {name!r}; allowed: {AGGREGATORS}")
    return _MODELS[name](check_int(in_dim, "in_dim", ge=1), check_config(cfg))


def check_config(cfg: MILConfig) -> MILConfig:
    """``cfg`` with every number validated (ValueError naming it) and made a plain int / float.

    Used by :func:`build_mil` and :func:`slamags_core.mil.train_mil`, which go on with the copy.
    """
    if not isinstance(cfg, MILConfig):
        raise ValueError(f"expected a MILConfig, got {type(cfg).__name__}")
    ints = {f: check_int(getattr(cfg, f), f, ge=1)
            for f in ("epochs", "batch_bags", "hidden_dim", "n_prototypes", "patience", "restarts")}
    for f in ("standardize", "bag_center"):
        if not isinstance(getattr(cfg, f), (bool, np.bool_)):
            raise ValueError(f"{f} must be True or False, got {getattr(cfg, f)!r}")
    return dataclasses.replace(
        cfg, **ints, seed=check_int(cfg.seed, "seed", ge=0),
        warmup_epochs=check_int(cfg.warmup_epochs, "warmup_epochs", ge=0),
        lr=check_float(cfg.lr, "lr", gt=0),
        weight_decay=check_float(cfg.weight_decay, "weight_decay", ge=0),
        cluster_weight=check_float(cfg.cluster_weight, "cluster_weight", ge=0),
        instance_dropout=check_float(cfg.instance_dropout, "instance_dropout", ge=0, lt=1),
        query_init=check_float(cfg.query_init, "query_init", ge=0),
        topk_fraction=check_float(cfg.topk_fraction, "topk_fraction", gt=0, le=1),
        standardize=bool(cfg.standardize), bag_center=bool(cfg.bag_center))

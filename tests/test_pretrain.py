"""Tests of slamags_core.pretrain (and monitor): the schedule, what each strategy trains, the AGS
step against a hand-written per-task computation, exact resume, errors, collapse diagnostics."""
import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch

from slamags_core import batching
from slamags_core import checkpoint as C
from slamags_core import pretrain as P
from slamags_core import strategies as S
from slamags_core.augment import Augmenter
from slamags_core.config import METHODS, PretrainConfig
from slamags_core.encoders import build_encoder
from slamags_core.losses import nt_xent, similarity_loss
from slamags_core.monitor import (CollapseWarning, collapse_report, effective_rank,
                                  embedding_std, warn_if_collapsed)

CFG = PretrainConfig(encoder="tiny_cnn", width=4, crop_size=12, proj_dim=8, steps=6,
                     batch_size=16, lr=0.05, warmup_steps=3, checkpoint_every=3, log_every=1,
                     monitor_size=16, seed=1)


def pools(n_pos=24, n_neg=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_pos, size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (n_neg, size, size, 3), dtype=np.uint8))


def init_state(cfg):
    torch.manual_seed(cfg.seed)
    return build_encoder(cfg).state_dict()


def run(method, cfg=CFG, data=None, **kw):
    pos, neg = data if data is not None else pools()
    strategy = S.STRATEGIES.get(method)  # None: an unknown method, left to pretrain to refuse
    if strategy is not None and strategy.instance_labels:  # the oracle needs the cells' labels
        kw.setdefault("pos_labels", np.arange(len(pos)) % 4 == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        return P.pretrain(method, pos, neg, cfg, device="cpu", progress=False, **kw)


# ------------------------------------------------------------------ schedule

def test_lr_schedule():
    assert [P.lr_factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert P.lr_factor(4, 4, 12) == 1.0
    assert P.lr_factor(8, 4, 12) == pytest.approx(0.5)
    assert P.lr_factor(12, 4, 12) == pytest.approx(0.0)
    assert P.lr_factor(0, 0, 10) == 1.0


def test_budget_is_a_number_of_steps_whatever_the_pool_size():
    small = run("simclr", data=pools(24, 24))
    large = run("simclr", data=pools(240, 480))
    assert [r["step"] for r in small.history] == [r["step"] for r in large.history] == list(range(6))
    assert [s["step"] for s in large.summaries] == [0, 3, 6]
    assert large.summaries[-1]["epochs"] == pytest.approx(6 * 16 / 720)


# ------------------------------------------------------------------ what each strategy trains

def _changed(before, module):
    return {k for k, v in module.state_dict().items()
            if v.dtype.is_floating_point and not torch.equal(before[k], v)}


@pytest.mark.parametrize("method", S.ENGINE_METHODS)
def test_each_strategy_changes_what_it_should(method):
    before = init_state(CFG)
    res = run(method)
    changed = _changed(before, res.encoder)
    names = {n for n, _ in res.encoder.named_parameters()}
    backbone = {k for k in names if k.startswith("backbone.")}
    projector = {k for k in names if k.startswith("projector.")}
    if method == "random":
        assert not changed and res.history == [] and len(res.summaries) == 1
        return
    assert len(res.history) == CFG.steps and len(res.summaries) == CFG.steps // 3 + 1
    if method == "deep_svdd":  # bias-free: BatchNorm affine frozen, projector unused
        bn = {k for k in backbone if isinstance(res.encoder.get_submodule(k.rsplit(".", 1)[0]),
                                                torch.nn.BatchNorm2d)}
        assert bn and backbone - bn <= changed and not (bn | projector) & changed
        assert "loss_svdd" in res.history[0] and res.head.c.shape == (res.encoder.feature_dim,)
        return
    assert backbone <= changed
    if method in ("weak", "oracle"):
        assert not projector & changed  # the projector is not used by the patch classifier
        head = res.head.state_dict()
        torch.manual_seed(CFG.seed)
        build_encoder(CFG)
        ref_head = torch.nn.Linear(res.encoder.feature_dim, 2)
        assert not torch.equal(head["weight"], ref_head.weight)
        assert "loss_cls" in res.history[0]
    else:
        assert projector <= changed and res.head is None
    if method.startswith("slam_"):
        rec = res.history[-1]
        assert {"loss_con", "loss_sim", "cosine", "projected", "norm_con", "norm_sim",
                "norm_out"} <= set(rec)
        assert rec["loss"] == pytest.approx(rec["loss_con"] + rec["loss_sim"])


def test_all_config_methods_are_in_the_engine():
    assert set(METHODS) <= set(S.ENGINE_METHODS)


# ------------------------------------------------------------------ AGS == manual computation

def _manual_ags_step(cfg, pos, neg):
    """One SLAM-AGS step written out: separate forwards, autograd.grad, hand PCGrad + rescale,
    hand SGD update (first step: momentum buffer = gradient)."""
    torch.manual_seed(cfg.seed)
    enc = build_encoder(cfg)
    params = list(enc.parameters())
    pi, ni = batching.BatchSampler(len(pos), len(neg), cfg.batch_size, cfg.seed).batch(0)
    aug = Augmenter(cfg.crop_size, generator=batching.augmentation_generator(cfg.seed, 0))
    p1, p2 = aug(pos[pi.numpy()])
    n1, n2 = aug(neg[ni.numpy()], center_first=True)
    _, zp = enc(torch.cat([p1, p2]))
    _, zn = enc(torch.cat([n1, n2]))
    B, Bn = len(pi), len(ni)
    g1 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        nt_xent(zp[:B], zp[B:], cfg.temperature), params)])
    g2 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        similarity_loss(zn[:Bn], zn[Bn:], cfg.temperature), params)])
    dot = g1 @ g2
    h1, h2 = g1.clone(), g2.clone()
    if dot < 0:
        h1 = g1 - dot / (g2 @ g2) * g2
        h2 = g2 - dot / (g1 @ g1) * g1
    g = h1 + h2
    g = g * (g1 + g2).norm() / g.norm() if dot < 0 else g
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    new = flat - cfg.lr * (g + cfg.weight_decay * flat)
    return enc, new, float(dot)


@pytest.mark.parametrize("conflict", [True, False])
def test_ags_step_equals_manual_per_task_computation(conflict):
    # seeds/temperatures chosen so that the first step's task gradients do / do not conflict
    t, pos_neg = (0.5, "same") if conflict else (0.07, "other")
    cfg = dataclasses.replace(CFG, steps=1, warmup_steps=0, batch_size=40, seed=0,
                              temperature=t)
    pos, neg = pools(20, 28, seed=0)
    neg = pos.copy() if pos_neg == "same" else neg
    res = run("slam_ags", cfg, (pos, neg))
    enc, new, dot = _manual_ags_step(cfg, pos, neg)
    assert len(res.history) == 1
    assert (dot < 0) == conflict == res.history[0]["conflict"] == res.history[0]["projected"]
    got = torch.cat([p.detach().reshape(-1) for p in res.encoder.parameters()])
    torch.testing.assert_close(got, new, rtol=1e-5, atol=1e-6)
    # slam_sum takes a different step exactly when the task gradients conflict
    summed = run("slam_sum", cfg, (pos, neg))
    other = torch.cat([p.detach().reshape(-1) for p in summed.encoder.parameters()])
    assert torch.allclose(other, new, rtol=1e-5, atol=1e-6) != conflict


def test_slam_sum_cheap_path_equals_stats_path():
    cheap = run("slam_sum", dataclasses.replace(CFG, surgery_stats=False))
    stats = run("slam_sum", CFG)
    assert "cosine" not in cheap.history[0] and "cosine" in stats.history[0]
    for a, b in zip(cheap.encoder.parameters(), stats.encoder.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ checkpoints and resume

def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("method,stop", [("slam_ags", 3), ("weak", 3), ("slam_ags", 4)])
def test_resume_is_exact(tmp_path, method, stop):
    straight = run(method, out_dir=tmp_path / "a")
    first = run(method, out_dir=tmp_path / "b", stop_after=stop)  # 4: between two checkpoints
    assert len(first.history) == stop and first.summaries[-1]["step"] == stop
    resumed = run(method, out_dir=tmp_path / "b")
    assert _same_weights(straight.encoder, resumed.encoder)
    assert straight.history == resumed.history
    if method == "weak":
        assert _same_weights(straight.head, resumed.head)
    again = run(method, out_dir=tmp_path / "a")  # finished run: returned without training
    assert _same_weights(straight.encoder, again.encoder) and again.history == straight.history


def test_same_seed_same_weights_and_other_seed_differs():
    a, b = run("simclr"), run("simclr")
    c = run("simclr", dataclasses.replace(CFG, seed=2))
    assert _same_weights(a.encoder, b.encoder) and not _same_weights(a.encoder, c.encoder)


def test_checkpoint_contents_and_log(tmp_path):
    res = run("slam_pcgrad", out_dir=tmp_path)
    ck = torch.load(res.checkpoint, weights_only=True)
    assert ck["method"] == "slam_pcgrad" and ck["step"] == CFG.steps and ck["format"] == 2
    assert ck["config"] == dataclasses.asdict(CFG)
    assert {"model", "optimizer", "scheduler", "history", "summaries", "data"} <= set(ck)
    lines = [json.loads(x) for x in (tmp_path / C.LOG_NAME).read_text().splitlines()]
    assert sum(x["type"] == "step" for x in lines) == len(res.history)
    assert sum(x["type"] == "summary" for x in lines) == len(res.summaries)
    enc = C.load_encoder(tmp_path, CFG)
    assert _same_weights(enc, res.encoder) and not enc.training


def test_random_saves_its_initial_encoder(tmp_path):
    res = run("random", out_dir=tmp_path)
    assert res.checkpoint.exists()
    assert _same_weights(C.load_encoder(res.checkpoint), res.encoder)


def test_mismatched_checkpoint_is_refused(tmp_path):
    run("slam_ags", out_dir=tmp_path, stop_after=1)
    with pytest.raises(ValueError, match="lr"):
        run("slam_ags", dataclasses.replace(CFG, lr=0.1), out_dir=tmp_path)
    with pytest.raises(ValueError, match="method"):
        run("slam_sum", out_dir=tmp_path)
    with pytest.raises(ValueError, match="pools"):
        run("slam_ags", data=pools(seed=9), out_dir=tmp_path)
    with pytest.raises(ValueError, match="width"):
        C.load_encoder(tmp_path, dataclasses.replace(CFG, width=8))
    fresh = run("slam_ags", dataclasses.replace(CFG, lr=0.1), out_dir=tmp_path, resume=False)
    assert len(fresh.history) == 6
    # where and how fast may change on resume: pool placement, read and checkpoint intervals
    run("slam_ags", dataclasses.replace(CFG, lr=0.1, log_every=2, pool_placement="device"),
        out_dir=tmp_path)


@pytest.mark.parametrize("log_every", [1, 3])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, log_every):
    calls = {"n": 0}
    real = S.similarity_loss

    def flaky(z1, z2, temperature):
        calls["n"] += 1
        out = real(z1, z2, temperature)
        return out * float("nan") if calls["n"] == 5 else out  # step 4

    monkeypatch.setattr(S, "similarity_loss", flaky)
    cfg = dataclasses.replace(CFG, log_every=log_every)  # 3: found when step 5 is read
    with pytest.raises(P.NonFiniteLossError, match=r"step 4 of strategy 'slam_ags'") as err:
        run("slam_ags", cfg, out_dir=tmp_path)
    assert "(step 3)" in str(err.value)
    ck = C.load_checkpoint(tmp_path)
    assert ck["step"] == 3 and len(ck["history"]) == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        run("byol")
    with pytest.raises(ValueError, match="optimizer"):
        run("simclr", dataclasses.replace(CFG, optimizer="lamb"))
    with pytest.raises(ValueError, match="uint8"):
        P.pretrain("simclr", *[p.astype(np.float32) for p in pools()], CFG, progress=False)


def test_adamw_option_trains():
    res = run("simclr", dataclasses.replace(CFG, optimizer="adamw", lr=1e-3))
    assert _changed(init_state(CFG), res.encoder)


# ------------------------------------------------------------------ collapse monitor

def test_monitor_known_answer():
    E = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    # unit rows [1,0],[0,1]x3: column stds (unbiased) are both 0.5
    assert embedding_std(E) == pytest.approx(0.5)
    # singular values of the unit rows: 1 and sqrt(3)
    p = np.array([1.0, math.sqrt(3)]) / (1 + math.sqrt(3))
    assert effective_rank(E) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_monitor_random_vs_collapsed():
    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(2000, 32, generator=g)
    collapsed = torch.ones(2000, 32) + 1e-4 * torch.randn(2000, 32, generator=g)
    r = collapse_report(healthy)
    assert r["std_ratio"] == pytest.approx(1.0, abs=0.05) and r["erank"] > 30
    assert not r["collapsed"]
    c = collapse_report(collapsed, prefix="z_")
    assert c["z_std_ratio"] < 0.01 and c["z_erank"] < 1.1 and c["z_collapsed"]
    with pytest.warns(CollapseWarning, match="epoch 3"):
        assert warn_if_collapsed(c, "epoch 3")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_collapsed(r, "epoch 3")


def test_monitor_is_logged_at_each_checkpoint():
    res = run("sim_only")
    assert [e["step"] for e in res.summaries] == [0, 3, 6]
    assert all({"h_std", "h_erank", "z_std", "z_erank", "z_collapsed"} <= set(e)
               for e in res.summaries)

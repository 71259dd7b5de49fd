"""Deep SVDD (Ruff et al., ICML 2018) as a pretraining method: the centre, the collapse
safeguards, training lowers the loss, exact resume, and the score ranks planted outliers."""
import copy
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from slamags_core import deep_svdd as DS
from slamags_core import pretrain as P
from slamags_core.augment import Augmenter
from slamags_core.config import PretrainConfig
from slamags_core.encoders import build_encoder
from slamags_core.monitor import CollapseWarning
from slamags_core.synthetic import render_cells

CFG = PretrainConfig(encoder="tiny_cnn", width=8, crop_size=28, proj_dim=16, steps=15,
                     batch_size=64, lr=0.05, warmup_steps=0, checkpoint_every=5, log_every=5,
                     monitor_size=64, seed=0)


@pytest.fixture(scope="module")
def cells():
    """Lymphocytes (the only cells of negative slides) and, held out, lymphocytes and blasts."""
    rng = np.random.default_rng(0)
    lyt = render_cells(["LYT"] * 420, image_size=32, difficulty=0.0, rng=rng)
    bla = render_cells(["BLA"] * 100, image_size=32, difficulty=0.0, rng=rng)
    return {"neg": lyt[:256], "pos": lyt[256:320], "test": np.concatenate([lyt[320:], bla]),
            "y": np.r_[np.zeros(100), np.ones(100)]}


def run(cells, cfg=CFG, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # compactness is the objective here
        return P.pretrain("deep_svdd", cells["pos"], cells["neg"], cfg, device="cpu",
                          progress=False, **kw)


def test_centre_is_the_initial_batch_mean_and_leaves_the_encoder_alone(cells):
    torch.manual_seed(0)
    enc = build_encoder(CFG)
    before = copy.deepcopy(enc.state_dict())
    c = DS.init_centre(enc, cells["neg"], CFG, "cpu")
    net, aug = copy.deepcopy(enc).train(), Augmenter(CFG.crop_size)
    with torch.no_grad():
        h = torch.cat([net(aug.center_view(x))[0]
                       for x in torch.split(torch.from_numpy(cells["neg"]), CFG.batch_size)])
    torch.testing.assert_close(c, h.mean(0).clamp_min(DS.CENTRE_EPS))
    assert (c >= DS.CENTRE_EPS).all()
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # running stats too
    with pytest.raises(ValueError, match="negative patches"):
        DS.init_centre(enc, cells["neg"][:0], CFG, "cpu")


def test_loss_and_scores_known_answers():
    H = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    c = torch.tensor([1.0, 1.0])
    assert DS.svdd_loss(H, c) == pytest.approx((1 + 5) / 2)
    np.testing.assert_allclose(DS.svdd_scores(H, c), [1.0, 5.0])
    with pytest.raises(ValueError, match="need H"):
        DS.svdd_scores(H, torch.ones(3))


@pytest.fixture(scope="module")
def trained(cells):
    return run(cells, dataclasses.replace(CFG, steps=20))


def test_trains_without_bias_terms_and_the_loss_falls(trained):
    res = trained
    loss = [e["loss"] for e in res.summaries[1:]]
    assert loss[-1] < 0.5 * loss[0]
    assert all(not p.requires_grad for p in DS.batchnorm_affine_parameters(res.encoder))
    for m in res.encoder.backbone.modules():  # gamma = 1, beta = 0: BatchNorm without affine
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
    assert [n for n, _ in res.head.named_parameters()] == []  # the centre is not trained
    assert res.summaries[-1]["h_std_ratio"] > 0.01 and res.summaries[-1]["h_erank"] > 2  # not one point


def test_resume_is_exact(cells, tmp_path):
    small = {"pos": cells["pos"][:32], "neg": cells["neg"][:96]}
    cfg = dataclasses.replace(CFG, steps=4, checkpoint_every=2)
    straight = run(small, cfg, out_dir=tmp_path / "a")
    run(small, cfg, out_dir=tmp_path / "b", stop_after=2)
    resumed = run(small, cfg, out_dir=tmp_path / "b")
    for a, b in ((straight.encoder, resumed.encoder), (straight.head, resumed.head)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert straight.history == resumed.history
    torch.testing.assert_close(DS.load_centre(tmp_path / "b"), straight.head.c)
    other = P.pretrain("random", small["pos"], small["neg"], cfg, device="cpu", progress=False,
                       out_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="not 'deep_svdd'"):
        DS.load_centre(other.checkpoint)


def test_score_ranks_planted_outliers_above_inliers(cells, trained):
    res = trained
    scores = DS.cell_scores(res.encoder, res.head.c, cells["test"], CFG)
    assert roc_auc_score(cells["y"], scores) > 0.9  # blasts far from the lymphocytes' centre
    torch.manual_seed(CFG.seed)
    untrained = build_encoder(CFG)
    c0 = DS.init_centre(untrained, cells["neg"], CFG, "cpu")
    assert roc_auc_score(cells["y"], scores) > roc_auc_score(
        cells["y"], DS.cell_scores(untrained, c0, cells["test"], CFG))  # training helped

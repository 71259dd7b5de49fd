"""The exercise graders: right answers pass, typical wrong answers are caught with a message that
names the failing input and the mistake, stubs read as "not attempted", and the notebooks and
their solution notebooks call the graders the registry lists."""
import math
import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slamags_core import exercises as ex

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ right answers (independent)

def bag_pooling(scores, bag_index, how):
    scores, bag_index = np.asarray(scores), np.asarray(bag_index)
    return np.array([getattr(np, how)(scores[bag_index == b]) for b in range(bag_index.max() + 1)])


def mean_pool_auc(witness_rate, gap, sigma, bag_size):
    return NormalDist().cdf(witness_rate * gap * math.sqrt(bag_size) / (sigma * math.sqrt(2)))


def bag_size_for_auc(target_auc, witness_rate, gap, sigma):
    n = 1
    while mean_pool_auc(witness_rate, gap, sigma, n) < target_auc:
        n += 1
    return n


def nt_xent(z1, z2, temperature):
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    n, b = len(u), len(z1)
    s = u @ u.T / temperature
    terms = []
    for i in range(n):
        others = torch.cat([s[i, :i], s[i, i + 1:]])
        terms.append(torch.logsumexp(others, 0) - s[i, (i + b) % n])
    return torch.stack(terms).mean()


def similarity_loss(z1, z2, temperature):
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(u)
    off = (u @ u.T).sum() - (u * u).sum()
    return (1 - off / (n * (n - 1))) / temperature


def one_label_supcon(z, temperature):
    u = F.normalize(z, dim=1)
    n = len(u)
    s = u @ u.T / temperature
    mask = ~torch.eye(n, dtype=torch.bool)
    terms = [torch.logsumexp(s[i][mask[i]], 0) - s[i][mask[i]].mean() for i in range(n)]
    return torch.stack(terms).mean()


def pcgrad(grads, order):
    out = []
    for i, g in enumerate(grads):
        gi = g.clone()
        for j in order:
            if j != i and gi @ grads[j] < 0:
                gi = gi - (gi @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
        out.append(gi)
    return torch.stack(out).sum(0)


def pcgrad_two(g_con, g_sim):
    return pcgrad([g_con, g_sim], [0, 1])


def ags(g_con, g_sim):
    g_pc = pcgrad_two(g_con, g_sim)
    n = g_pc.norm()
    return g_pc if n == 0 else g_pc * (g_con + g_sim).norm() / n


def std_ratio(E):
    return float(F.normalize(E, dim=1).std(dim=0).mean() * math.sqrt(E.shape[1]))


def effective_rank(E):
    s = torch.linalg.svdvals(F.normalize(E.double(), dim=1))
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def slam_losses(encoder, pos_views, neg_views, temperature):
    _, z_pos = encoder(torch.cat(pos_views))
    _, z_neg = encoder(torch.cat(neg_views))
    b, c = len(pos_views[0]), len(neg_views[0])
    return (nt_xent(z_pos[:b], z_pos[b:], temperature),
            similarity_loss(z_neg[:c], z_neg[c:], temperature))


def gated_attention(R, V_a, U_a, w_a):
    e = (torch.tanh(R @ V_a.T) * torch.sigmoid(R @ U_a.T)) @ w_a
    a = torch.softmax(e, dim=0)
    return a, (a[:, None] * R).sum(0)


def witness_outrankers(instance_auroc, bag_size, witness_rate):
    n_w = max(1, int(witness_rate * bag_size + 0.5))
    return (1 - instance_auroc) * (bag_size - n_w)


def topk_recall(scores, labels, k):
    scores, labels = np.asarray(scores), np.asarray(labels)
    kth = np.sort(scores)[::-1][k - 1]
    above, tied = scores > kth, scores == kth
    hits = labels[above].sum() + (k - above.sum()) * labels[tied].mean()
    return hits / labels.sum()


def instance_auroc(scores, labels):
    w, n = scores[labels == 1], scores[labels == 0]
    return float(np.mean([(x > n).mean() + 0.5 * (x == n).mean() for x in w]))


def knn_purity(E, y, k):
    u = E / np.linalg.norm(E, axis=1, keepdims=True)
    out = []
    for i in np.flatnonzero(y == 1):
        sim = u @ u[i]
        sim[i] = -np.inf
        out.append(y[np.argsort(-sim)[:k]].mean())
    return float(np.mean(out))


def within_bag_rank(scores, bag_index):
    out = np.empty(len(scores))
    for b in np.unique(bag_index):
        m = bag_index == b
        s = scores[m]
        rank = np.array([(s < v).sum() + ((s == v).sum() + 1) / 2 for v in s])
        out[m] = (rank - 1) / (m.sum() - 1)
    return out


def seed_summary(values):
    v = np.asarray(values, dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else math.nan), len(v)


def paired_bootstrap_ci(a, b, n_boot, seed):
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return tuple(np.quantile(means, [0.025, 0.975]))


RIGHT = {
    "check_bag_pooling": bag_pooling, "check_mean_pool_auc": mean_pool_auc,
    "check_bag_size_for_auc": bag_size_for_auc, "check_nt_xent": nt_xent,
    "check_similarity_loss": similarity_loss, "check_one_label_supcon": one_label_supcon,
    "check_pcgrad_two_tasks": pcgrad_two, "check_pcgrad": pcgrad, "check_ags": ags,
    "check_std_ratio": std_ratio, "check_effective_rank": effective_rank,
    "check_slam_losses": slam_losses, "check_gated_attention": gated_attention,
    "check_witness_outrankers": witness_outrankers, "check_topk_recall": topk_recall,
    "check_instance_auroc": instance_auroc, "check_knn_purity": knn_purity,
    "check_within_bag_rank": within_bag_rank, "check_seed_summary": seed_summary,
    "check_paired_bootstrap_ci": paired_bootstrap_ci,
}
GRADERS = sorted({g for gs in ex.EXERCISES.values() for g in gs})


def test_every_grader_has_a_right_answer_here():
    assert sorted(RIGHT) == GRADERS
    assert sorted(GRADERS) == sorted(n for n in ex.__all__ if n.startswith("check_"))


@pytest.mark.parametrize("grader", GRADERS)
def test_a_right_answer_passes(grader, capsys):
    report = getattr(ex, grader)(RIGHT[grader], strict=True)
    assert report.passed and report.n_passed == report.n_cases >= 4
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("grader", GRADERS)
def test_a_stub_is_not_attempted_and_does_not_raise(grader, capsys):
    def my_solution(*args):
        raise NotImplementedError("write me")

    report = getattr(ex, grader)(my_solution)
    assert report.status == "not attempted" and not report
    assert "not attempted" in capsys.readouterr().out
    with pytest.raises(ex.ExerciseFailed, match="not attempted"):
        getattr(ex, grader)(my_solution, strict=True)


@pytest.mark.parametrize("grader", GRADERS)
def test_code_that_crashes_is_reported_not_raised(grader):
    def my_solution(*args):
        return {}["oops"]

    report = getattr(ex, grader)(my_solution)
    assert report.status == "failed"
    assert "raised KeyError" in report.message and "case 1 of" in report.message


# ------------------------------------------------------------------ typical wrong answers

def _caught(grader, wrong, *hint_words, case=None):
    report = getattr(ex, grader)(wrong)
    assert report.status == "failed", f"{grader} let a wrong answer pass"
    assert "input:" in report.message and "case " in report.message
    if case is not None:
        assert report.case is not None and case in report.case, report.message
    for w in hint_words:
        assert w.lower() in report.message.lower(), report.message
    with pytest.raises(ex.ExerciseFailed):
        getattr(ex, grader)(wrong, strict=True)
    return report


def test_nt_xent_with_the_diagonal_left_in_is_caught():
    def with_diagonal(z1, z2, t):
        u = F.normalize(torch.cat([z1, z2]), dim=1)
        n, b = len(u), len(z1)
        s = u @ u.T / t
        i = torch.arange(n)
        return (torch.logsumexp(s, 1) - s[i, (i + b) % n]).mean()

    report = _caught("check_nt_xent", with_diagonal, "j = i", "diagonal", case="B=4")
    assert "expected" in report.message and "got" in report.message
    torch.testing.assert_close(with_diagonal(*report.inputs), report.got)  # inputs reproduce it


def test_nt_xent_mistakes_are_named():
    def _raw_ntx_first_half(z1, z2, t):
        u = F.normalize(torch.cat([z1, z2]), dim=1)
        s = u @ u.T / t
        n, b = len(u), len(z1)
        s = s.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
        i = torch.arange(b)
        return (torch.logsumexp(s[:b], 1) - s[i, i + b]).mean()

    def naive_exp(z1, z2, t):  # right formula, but no logsumexp: overflows in float32 at t = 0.01
        u = F.normalize(torch.cat([z1, z2]), dim=1)
        n, b = len(u), len(z1)
        e = torch.exp(u @ u.T / t) * (1 - torch.eye(n, dtype=u.dtype))
        i = torch.arange(n)
        return -(torch.log(e[i, (i + b) % n] / e.sum(1))).mean()

    def not_differentiable(z1, z2, t):
        return float(nt_xent(z1, z2, t).detach())

    _caught("check_nt_xent", _raw_ntx, "normalise")
    _caught("check_nt_xent", _raw_ntx_first_half, "all 2B anchors")
    _caught("check_nt_xent", naive_exp, "logsumexp", case="float32")
    _caught("check_nt_xent", not_differentiable, "autograd", case="gradients")


def _raw_ntx(z1, z2, t):
    u = torch.cat([z1, z2])
    n, b = len(u), len(z1)
    s = (u @ u.T / t).masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    i = torch.arange(n)
    return (torch.logsumexp(s, 1) - s[i, (i + b) % n]).mean()


def test_similarity_loss_with_the_diagonal_is_caught():
    def with_diagonal(z1, z2, t):
        u = F.normalize(torch.cat([z1, z2]), dim=1)
        return (1 - (u @ u.T).mean()) / t

    _caught("check_similarity_loss", with_diagonal, "i != j")


def test_one_label_supcon_with_self_in_the_denominator_is_caught():
    def with_self(z, t):
        u = F.normalize(z, dim=1)
        s = u @ u.T / t
        n = len(u)
        mask = ~torch.eye(n, dtype=torch.bool)
        return torch.stack([torch.logsumexp(s[i], 0) - s[i][mask[i]].mean() for i in range(n)]).mean()

    _caught("check_one_label_supcon", with_self, "a = i")


def test_pcgrad_onto_the_modified_gradient_is_caught():
    def onto_modified(g_con, g_sim):
        a = g_con - min(0.0, float(g_con @ g_sim)) / (g_sim @ g_sim) * g_sim
        b = g_sim - min(0.0, float(g_sim @ a)) / (a @ a) * a
        return a + b

    _caught("check_pcgrad_two_tasks", onto_modified, "MODIFIED", "ORIGINAL", case="conflicting")


def test_pcgrad_without_a_conflict_test_is_caught():
    def always(g_con, g_sim):
        d = g_con @ g_sim
        return (g_con - d / (g_sim @ g_sim) * g_sim) + (g_sim - d / (g_con @ g_con) * g_con)

    _caught("check_pcgrad_two_tasks", always, "only when", case="agreeing")


def test_pcgrad_for_t_tasks_mistakes_are_caught():
    def onto_modified(grads, order):
        current = [g.clone() for g in grads]
        for i in range(len(grads)):
            for j in order:
                gi, gj = current[i], current[j]
                if j != i and gi @ gj < 0:
                    current[i] = gi - (gi @ gj) / (gj @ gj) * gj
        return torch.stack(current).sum(0)

    def ignores_order(grads, order):
        return pcgrad(grads, list(range(len(grads))))

    _caught("check_pcgrad", onto_modified, "ORIGINAL")
    _caught("check_pcgrad", ignores_order, "order")


def test_ags_mistakes_are_caught():
    def to_sum_of_norms(g_con, g_sim):
        g = pcgrad_two(g_con, g_sim)
        return g * (g_con.norm() + g_sim.norm()) / g.norm()

    def unguarded(g_con, g_sim):
        g = pcgrad_two(g_con, g_sim)
        return g * (g_con + g_sim).norm() / g.norm()

    _caught("check_ags", pcgrad_two, "PCGrad's gradient")
    _caught("check_ags", to_sum_of_norms, "not |g_con| + |g_sim|")
    _caught("check_ags", unguarded, "NaN", case="opposite")


def test_monitor_mistakes_are_caught():
    _caught("check_std_ratio", lambda E: float(E.std(0).mean() * math.sqrt(E.shape[1])), "normalise")
    _caught("check_std_ratio", lambda E: float(F.normalize(E, dim=1).std(0, unbiased=False).mean()
                                               * math.sqrt(E.shape[1])), "unbiased")

    def squared(E):
        s = torch.linalg.svdvals(F.normalize(E, dim=1)) ** 2
        p = s / s.sum()
        return float(torch.exp(-(p * p.clamp_min(1e-30).log()).sum()))

    _caught("check_effective_rank", squared, "squares")


def test_slam_losses_in_one_forward_are_caught():
    def one_forward(encoder, pos_views, neg_views, t):
        _, z = encoder(torch.cat([*pos_views, *neg_views]))
        b, c = len(pos_views[0]), len(neg_views[0])
        return (nt_xent(z[:b], z[b:2 * b], t), similarity_loss(z[2 * b:2 * b + c], z[2 * b + c:], t))

    def on_h(encoder, pos_views, neg_views, t):
        h_pos, _ = encoder(torch.cat(pos_views))
        h_neg, _ = encoder(torch.cat(neg_views))
        return nt_xent(*h_pos.chunk(2), t), similarity_loss(*h_neg.chunk(2), t)

    _caught("check_slam_losses", one_forward, "BatchNorm")
    _caught("check_slam_losses", on_h, "projections z")


def test_later_notebooks_graders_catch_their_mistakes():
    _caught("check_gated_attention", lambda R, V, U, w: (torch.softmax(torch.tanh(R @ V.T) @ w, 0),
                                                         torch.softmax(torch.tanh(R @ V.T) @ w, 0) @ R),
            "gate")
    _caught("check_witness_outrankers", lambda auc, n, wr: (1 - auc) * n, "N_neg")
    _caught("check_topk_recall", lambda s, y, k: y[np.argsort(-s, kind="stable")[:k]].sum() / y.sum(),
            "tied", case="uniform")
    _caught("check_instance_auroc", lambda s, y: float(np.mean([(x > s[y == 0]).mean() for x in s[y == 1]])),
            "one half", case="grid")
    _caught("check_knn_purity", lambda E, y, k: _purity_with_self(E, y, k), "own neighbour")
    _caught("check_within_bag_rank", lambda s, b: (np.argsort(np.argsort(s)) / (len(s) - 1)), "ITS bag")
    _caught("check_seed_summary", lambda v: (float(np.mean(v)), float(np.std(v)), len(v)), "ddof=1")


def _purity_with_self(E, y, k):
    u = E / np.linalg.norm(E, axis=1, keepdims=True)
    return float(np.mean([y[np.argsort(-(u @ u[i]))[:k]].mean() for i in np.flatnonzero(y == 1)]))


def test_an_unpaired_bootstrap_is_caught_and_named():
    def unpaired(a, b, n_boot, seed):
        rng = np.random.default_rng(seed)
        ma = np.asarray(a)[rng.integers(0, len(a), (n_boot, len(a)))].mean(1)
        mb = np.asarray(b)[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
        return tuple(np.quantile(ma - mb, [0.025, 0.975]))

    def unseeded(a, b, n_boot, seed):
        return paired_bootstrap_ci(a, b, n_boot, None)

    _caught("check_paired_bootstrap_ci", unpaired, "PAIRS", case="sharing")
    _caught("check_paired_bootstrap_ci", unseeded, "same seed")


def test_graders_leave_the_global_rng_alone():
    torch.manual_seed(123)
    np.random.seed(123)
    for grader in GRADERS:
        getattr(ex, grader)(RIGHT[grader])
    after = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    torch.testing.assert_close(after[0], torch.rand(3))
    np.testing.assert_array_equal(after[1], np.random.rand(3))


# ------------------------------------------------------------------ notebooks and solutions

def _calls(py: Path) -> list[tuple[str, bool]]:
    """(grader, strict?) for every `exercises.check_*(...)` call in a py:percent notebook."""
    text = py.read_text()
    return [(m.group(1), "strict=True" in m.group(2))
            for m in re.finditer(r"exercises\.(check_\w+)\(([^\n]*)\)", text)]


@pytest.mark.parametrize("notebook", sorted(ex.EXERCISES))
def test_each_notebook_ends_with_its_exercises_and_has_solutions(notebook):
    graders = list(ex.EXERCISES[notebook])
    student = _calls(ROOT / "notebooks" / "py" / f"{notebook}.py")
    assert [g for g, _ in student] == graders, f"{notebook}: the exercises' check cells call {student}"
    assert not any(strict for _, strict in student), "student notebooks must not call graders strictly"
    text = (ROOT / "notebooks" / "py" / f"{notebook}.py").read_text()
    assert text.count('raise NotImplementedError') >= len(graders), "every exercise starts as a stub"
    solution = ROOT / "notebooks" / "solutions" / "py" / f"{notebook}_solutions.py"
    assert solution.exists(), f"no solution notebook {solution.relative_to(ROOT)}"
    assert _calls(solution) == [(g, True) for g in graders], "solutions must call every grader strictly"
    assert "NotImplementedError" not in solution.read_text()


def test_a_check_cell_shows_its_message_once_and_a_later_cell_shows_it_again(capfd):
    # a check cell ends with the grader's call: the grader prints its message and the cell's
    # value (the Report) adds nothing; `report` alone in a later cell shows the message again
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from slamags_core import exercises\n"
                       "def my_seed_summary(values):\n    raise NotImplementedError('stub')",
                       store_history=True)
        capfd.readouterr()
        shell.run_cell("report = exercises.check_seed_summary(my_seed_summary)\nreport",
                       store_history=True)
        out = capfd.readouterr().out
        assert out.count("not attempted yet") == 1, out
        assert "<seed summary" not in out, out
        shell.run_cell("report", store_history=True)
        assert capfd.readouterr().out.count("not attempted yet") == 1
    finally:
        InteractiveShell.clear_instance()

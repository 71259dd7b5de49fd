"""Automatic graders for the notebooks' exercises.

Each ``check_*`` function takes a student's function, calls it on random and edge-case inputs
next to a reference (a package function, or a formula written out in the grader where the
package's name may change), and prints a report. When a case fails, the report names the
input, shows expected versus got and gives a hint; when the wrong answer equals a typical
mistake (the diagonal left in NT-Xent's denominator, a PCGrad projection onto the *modified*
gradient, ...) the hint names that mistake. A grader never fails with a bare ``assert``.

A function that still raises ``NotImplementedError`` (the stub the notebooks hand out) is
reported as *not attempted*, so a student notebook runs top to bottom. With ``strict=True``
anything but a pass raises :class:`ExerciseFailed`; the solution notebooks in
``notebooks/solutions/`` call the graders that way, so nbval keeps the solutions correct
(docs/teaching.md).

Every grader returns a :class:`Report`; ``report.inputs`` holds the failing case's arguments,
so ``my_fn(*report.inputs)`` reproduces the failure. Inputs are seeded: the same call gives
the same cases. One module per notebook; symbols follow docs/notation.md.
"""
from slamags_core.exercises.attention_mil import check_gated_attention, check_witness_outrankers
from slamags_core.exercises.cells_and_bags import (check_bag_pooling, check_bag_size_for_auc,
                                                   check_mean_pool_auc)
from slamags_core.exercises.embedding_geometry import check_knn_purity, check_within_bag_rank
from slamags_core.exercises.gradient_surgery import check_ags, check_pcgrad, check_pcgrad_two_tasks
from slamags_core.exercises.grading import ExerciseFailed, Report
from slamags_core.exercises.pretraining import check_effective_rank, check_slam_losses, check_std_ratio
from slamags_core.exercises.retrieval import check_instance_auroc, check_topk_recall
from slamags_core.exercises.seeds_and_cis import check_paired_bootstrap_ci, check_seed_summary
from slamags_core.exercises.two_losses import check_nt_xent, check_one_label_supcon, check_similarity_loss

# notebook -> the graders its exercises call, in order (tests/test_exercises.py keeps the
# notebooks and notebooks/solutions/ in step with this table)
EXERCISES: dict[str, tuple[str, ...]] = {
    "01_cells_and_bags": ("check_bag_pooling", "check_mean_pool_auc", "check_bag_size_for_auc"),
    "02_two_losses": ("check_nt_xent", "check_similarity_loss", "check_one_label_supcon"),
    "03_gradient_surgery": ("check_pcgrad_two_tasks", "check_pcgrad", "check_ags"),
    "04_pretraining": ("check_std_ratio", "check_effective_rank", "check_slam_losses"),
    "05_mil": ("check_gated_attention", "check_witness_outrankers"),
    "06_retrieval": ("check_topk_recall", "check_instance_auroc"),
    "07_umap_explorer": ("check_knn_purity", "check_within_bag_rank"),
    "08_witness_rate_sweep": ("check_seed_summary", "check_paired_bootstrap_ci"),
}

__all__ = [
    "EXERCISES", "ExerciseFailed", "Report",
    "check_bag_pooling", "check_mean_pool_auc", "check_bag_size_for_auc",
    "check_nt_xent", "check_similarity_loss", "check_one_label_supcon",
    "check_pcgrad_two_tasks", "check_pcgrad", "check_ags",
    "check_std_ratio", "check_effective_rank", "check_slam_losses",
    "check_gated_attention", "check_witness_outrankers",
    "check_topk_recall", "check_instance_auroc",
    "check_knn_purity", "check_within_bag_rank",
    "check_seed_summary", "check_paired_bootstrap_ci",
]

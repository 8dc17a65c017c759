"""The alignment intervals' bootstrap: the linear (first-order) replicates of Spearman and Kendall against the exact
ones, and the coverage of both regimes of `alignment.resample_plan` simulated with a known truth."""

import numpy as np
import pytest
from scipy import stats

from dhanalysis.metrics import alignment
from dhanalysis.stats.bootstrap import interval, replicate_counts

# image clustering: each image shares a random effect (u, v) by its points; share H of the variance is the image's
H, R_IMAGE, R_POINT = 0.4, 0.2, 0.6


def clustered(rng: np.random.Generator, images: int, per_image: float):
    """Points of ``images`` images (1 + Poisson(per_image − 1) each): an IoU-like x with 30% ties at 0 and a score
    rounded to 0.01, a Gaussian copula whose marginal correlation is H R_IMAGE + (1 − H) R_POINT."""
    sizes = 1 + rng.poisson(per_image - 1, images)
    pos = np.repeat(np.arange(images), sizes)
    u = rng.multivariate_normal([0, 0], [[1, R_IMAGE], [R_IMAGE, 1]], images)[pos]
    e = rng.multivariate_normal([0, 0], [[1, R_POINT], [R_POINT, 1]], len(pos))
    z = np.sqrt(H) * u + np.sqrt(1 - H) * e
    x = np.maximum(0, stats.norm.cdf(z[:, 0]) - 0.3) / 0.7
    return x, np.round(stats.norm.cdf(z[:, 1]), 2), pos


def test_components_are_scipys_and_their_derivatives_are_finite_differences():
    rng = np.random.default_rng(0)
    x, s = rng.integers(0, 20, 150) / 20, rng.integers(0, 9, 150) / 8
    (S, A, B, C, Vx, Vs), d = alignment._rank_components(x, s)
    assert S / np.sqrt(A * B) == pytest.approx(stats.kendalltau(x, s)[0], abs=1e-12)
    assert C / np.sqrt(Vx * Vs) == pytest.approx(stats.spearmanr(x, s)[0], abs=1e-12)

    def brute(w):  # the six sums by their definitions, for weights w (w_i copies of point i)
        dx, ds = np.sign(x[:, None] - x[None]), np.sign(s[:, None] - s[None])
        ww = w[:, None] * w[None]
        mid = [np.array([w[v < vi].sum() + (w[v == vi].sum() + 1) / 2 for vi in v]) - (w.sum() + 1) / 2
               for v in (x, s)]
        return np.array([(ww * dx * ds).sum() / 2, (ww * (dx != 0)).sum() / 2, (ww * (ds != 0)).sum() / 2,
                         w @ (mid[0] * mid[1]), w @ mid[0] ** 2, w @ mid[1] ** 2])

    for k in (3, 77):
        w = np.ones(150)
        w[k] += 1e-4
        assert (brute(w) - brute(np.ones(150))) / 1e-4 == pytest.approx(d[k], rel=1e-4)


def test_linear_replicates_agree_with_the_exact_ones():
    """On ~3,000 points in 200 images the first-order replicates have the exact bootstrap's spread (within 5%), its
    interval ends (within 0.01) and move with it replicate by replicate."""
    rng = np.random.default_rng(1)
    x, s, pos = clustered(rng, 200, 15)
    counts = replicate_counts(200, 400, 2)
    exact = alignment.ResamplePlan(x, s, pos, 200).replicates(counts)
    linear = alignment.LinearResamplePlan(x, s, pos).replicates(counts)
    np.testing.assert_array_equal(linear["pearson"], exact["pearson"])
    for c in ("spearman", "kendall"):
        assert np.std(linear[c]) == pytest.approx(np.std(exact[c]), rel=0.05)
        np.testing.assert_allclose(interval(linear[c]), interval(exact[c]), atol=0.01)
        assert np.corrcoef(linear[c], exact[c])[0, 1] > 0.98


def test_linear_replicates_are_nan_for_degenerate_draws():
    rng = np.random.default_rng(4)
    x, s, pos = clustered(rng, 30, 40)
    x[pos == 3] = 0.5
    only = np.zeros((1, 30))
    only[0, 3] = 30
    assert all(np.isnan(v[0]) for v in alignment.LinearResamplePlan(x, s, pos).replicates(only).values())


@pytest.mark.parametrize("images, per_image, floor", [(100, 20, 0.93), (30, 10, 0.90)])
def test_interval_coverage_with_image_clustering(images, per_image, floor):
    """300 studies of a population with a known truth: 100 images × ~20 points (~2,000 points: the linear plan) and
    30 images × ~10 points (~300: the exact plan). The truth is the marginal distribution's tau-b and Spearman (the
    limit of the pooled statistic over many images), from one sample of 10^6 points each from its own image. With
    30 images the percentile bootstrap over images itself covers about 0.92 (exact or linear alike; 1,000 studies),
    the known shortfall of a percentile interval with few clusters, hence its lower floor."""
    rng = np.random.default_rng(7)
    big_x, big_s, _ = clustered(rng, 1_000_000, 1)
    truth = {"kendall": stats.kendalltau(big_x, big_s)[0], "spearman": stats.spearmanr(big_x, big_s)[0]}
    covered = {c: 0 for c in truth}
    studies = 300
    linear = 0
    for k in range(studies):
        x, s, pos = clustered(rng, images, per_image)
        plan = alignment.resample_plan(x, s, pos, images)
        linear += isinstance(plan, alignment.LinearResamplePlan)
        reps = plan.replicates(replicate_counts(images, 400, k))
        for c, t in truth.items():
            lo, hi = interval(reps[c])
            covered[c] += lo <= t <= hi
    assert linear in (0, studies)  # each case tests one regime
    assert (linear == studies) == (images * per_image >= alignment.LINEAR_FROM)
    for c in truth:
        assert covered[c] / studies >= floor, (c, covered[c] / studies)

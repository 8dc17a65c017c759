"""Bootstrap over images: 95% intervals for every number a finding compares (paper claims, `findings`).

Images are the unit that was sampled (objects in one image share its clutter, its scale and the model's features),
so each bootstrap replicate draws the evaluated images with replacement and recomputes the statistic from them.
Two models compared on the same images draw the *same* images (a paired bootstrap), so the interval of a
difference reflects the variation of the difference, not of each number alone.

Models trained with several seeds are measured on the same test images: the design is *crossed* (seed × image), and
an estimate (the mean over seeds of each seed's statistic) carries three sources of noise — which models training
gave (seed), which images were sampled (image) and how the two interact. So a replicate draws the images once and
every seed and every model of a difference reads that one draw (`replicate_counts`); drawing images anew for each
seed, as if each seed had its own test set, divides the shared image variance by the number of seeds. With 3-5 seeds
a percentile bootstrap over seeds cannot see how uncertain the seed variance itself is, so the interval is a t
interval from variance components (`seed_image_t`):

- ``v_seed`` = var over seeds of the per-seed estimates / S (training noise, S − 1 degrees of freedom);
- ``v_image`` = the bootstrap variance of the seed-mean, less the seed×image part that ``v_seed`` already holds
  (the bootstrap variance of each seed's deviation from the seed-mean, averaged over seeds, / (S − 1));
- estimate ± t_{df} · sqrt(v_seed + v_image), df by Satterthwaite with N − 1 for the image part, computed at a 75%
  upper confidence bound of ``v_seed`` (with 3 seeds the plain plug-in often sees a small seed variance and then
  claims many degrees of freedom exactly when the interval is too short); the p-value is the same t test's, so
  "the interval excludes 0" and "p < 0.05" agree, and `holm` adjusts many such verdicts for multiplicity.

Coverage at nominal 95%, simulated with a known truth at the study's design (tests/test_interval_coverage.py, run
it to print the whole table: normal seed, image and seed×image effects, the seed share of the estimate's variance
0, 25, 50, 75 and 95%, 2,000 studies per cell, Monte Carlo error about ±0.5 points), lowest over the shares:

    seeds × images   two-level percentile   crossed percentile   t, S − 1 df   t, Satterthwaite   seed_image_t
    3 × 100          0.737                  0.754                0.970         0.916              0.944
    3 × 300          0.719                  0.747                0.968         0.918              0.938
    5 × 100          0.809                  0.866                0.959         0.942              0.949
    5 × 300          0.788                  0.862                0.964         0.946              0.950

The two-level percentile draws the seeds, then the images anew for each drawn seed; the crossed percentile shares
the image draw but still cannot widen for 3 seeds. A t with S − 1 degrees of freedom
covers too, but with 3 seeds its median interval is 1.8-2.4 times as wide as one that knew the true variance
(1.3-1.5 with 5 seeds); `seed_image_t`'s is 1.1-1.8 (1.0-1.3), widest where training noise dominates, which 3 seeds
cannot measure better.

Everything a finding needs is a function of per-image sums, so a replicate is a weighted sum: with per-image sums
``X`` ``(N, m)`` and replicate counts ``W`` ``(B, N)`` (how often each image was drawn), ``W @ X`` gives all ``B``
replicates of the ``m`` totals at once. COCO AP is not a sum; `dhanalysis.metrics.resampled_ap.CocoMatches` keeps
the package's COCO matching (`coco_match`, done once) and reruns its accumulation on each replicate's images.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import chi2
from scipy.stats import t as student_t

from dhanalysis.stats.moments import pcc_from_moments

# Intervals that decide (compare's p-values and Holm, the study's verdicts): the smallest two-sided p-value a
# bootstrap of B replicates gives is 2 / (B + 1), so Holm over m metrics needs B >= 40 m - 1 (docs/detections.md).
# The descriptive percentile intervals of the detections and pcc tables have their own, smaller defaults
# (`alignment.ALIGNMENT_REPLICATES`, `measures.MEASURE_REPLICATES`): they describe, and no verdict is read from them.
DEFAULT_REPLICATES = 1000
CONFIDENCE = 0.95
# the degrees of freedom read the seed variance at its one-sided 75% upper bound (see the module docstring)
SEED_GUARD = 0.25


def replicate_counts(num_images: int, replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> np.ndarray:
    """``(B, N)`` how often each of N images is drawn in each of B replicates (each row sums to N).

    In a crossed design the one row of a replicate serves every seed and every model of a difference, so the
    variation of the shared images is counted once, in full."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=replicates).astype(np.float64)


def interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of the finite replicates (NaN, NaN when fewer than half are finite)."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < max(2, len(replicates) // 2):
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def seed_image_t(per_seed: np.ndarray, replicates: np.ndarray, num_images: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, standard error, degrees of freedom) of the mean over seeds of a statistic measured in a crossed
    seed × image design, each of shape ``(...)`` (leading axes are independent problems, e.g. simulated studies).

    ``per_seed`` ``(..., S)``: each seed's statistic on every image once. ``replicates`` ``(..., B, S)``: each seed's
    statistic on replicate b's images, the same draw for every seed. A replicate with a non-finite value for any
    seed is left out; with fewer than half of them left, the standard error is NaN (not measured). One seed gives the
    image bootstrap alone: its interval is about those images for that one trained model, not about training.
    """
    per_seed = np.asarray(per_seed, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64)
    num_seeds, num_reps = per_seed.shape[-1], reps.shape[-2]
    finite = np.isfinite(reps).all(axis=-1)
    reps = np.where(finite[..., None], reps, np.nan)
    estimate = per_seed.mean(axis=-1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN problems: reported as NaN below
        seed_mean = reps.mean(axis=-1)
        v_image = np.nanvar(seed_mean, axis=-1, ddof=1)
        image_df = max(num_images - 1, 1)
        if num_seeds > 1:
            v_seed = per_seed.var(axis=-1, ddof=1) / num_seeds
            # each seed's deviation from the seed-mean moves with the images only through the seed×image part,
            # which v_seed already counts: take it out of the image part so it is not counted twice
            v_both = np.nanvar(reps - seed_mean[..., None], axis=-2, ddof=1).mean(axis=-1) / (num_seeds - 1)
            v_image = np.maximum(v_image - v_both, 0.0)
            guard = v_seed * (num_seeds - 1) / chi2.ppf(SEED_GUARD, num_seeds - 1)
            denominator = guard ** 2 / (num_seeds - 1) + v_image ** 2 / image_df
            df = np.where(denominator > 0, (guard + v_image) ** 2 / denominator, np.inf)
        else:
            v_seed = np.zeros_like(estimate)
            df = np.full_like(estimate, image_df)
        se = np.sqrt(v_seed + v_image)
    measured = (finite.sum(axis=-1) >= max(2, num_reps // 2)) & np.isfinite(estimate)
    return estimate, np.where(measured, se, np.nan), np.where(measured, df, np.nan)


def t_interval(estimate: float, se: float, df: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """estimate ± t quantile · se (NaN, NaN when the standard error is not measured)."""
    if not (np.isfinite(estimate) and np.isfinite(se)):
        return float("nan"), float("nan")
    half = float(student_t.ppf(0.5 + confidence / 2, df)) * se if se > 0 else 0.0
    return float(estimate - half), float(estimate + half)


def t_p_value(estimate: float, se: float, df: float) -> float:
    """Two-sided p-value of "the mean is 0" from the same t as `t_interval`, so p < 1 − confidence exactly when the
    interval excludes 0."""
    if not (np.isfinite(estimate) and np.isfinite(se)):
        return float("nan")
    if se == 0:
        return 1.0 if estimate == 0 else 0.0
    return float(min(1.0, 2 * student_t.sf(abs(estimate) / se, df)))


def holm(p_values: list[float], alpha: float = 1 - CONFIDENCE) -> list[bool]:
    """Holm's step-down rule: which of the hypotheses are rejected at family-wise error ``alpha``.

    Sort the m p-values ascending; reject the i-th smallest (1-based) while p_(i) <= alpha / (m − i + 1), and stop
    at the first that is not. NaN p-values (claims not measured) are neither counted nor rejected.
    """
    finite = [(p, i) for i, p in enumerate(p_values) if np.isfinite(p)]
    rejected = [False] * len(p_values)
    m = len(finite)
    for rank, (p, i) in enumerate(sorted(finite)):
        if p > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def pcc_of_sums(sums: np.ndarray) -> np.ndarray:
    """Pearson's r from moment columns ``(..., 6)``: n, Σx, Σx², Σs, Σs², Σxs."""
    return pcc_from_moments(*(sums[..., i] for i in range(6)))


def ratio_of_sums(sums: np.ndarray) -> np.ndarray:
    """Mean from ``(..., 2)`` columns (Σvalue, count); NaN where the count is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums[..., 1] > 0, sums[..., 0] / sums[..., 1], np.nan)


def positions_of(counts_row: np.ndarray) -> np.ndarray:
    """Image positions of one replicate from its draw counts (image i repeated counts[i] times)."""
    return np.repeat(np.arange(len(counts_row)), counts_row.astype(np.int64))

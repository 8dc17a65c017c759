"""Score–IoU alignment measures that tell recognition apart from localisation-aware ranking, defined once for every
box set (sliding windows, RPN proposals, detections, any results file).

The paper's one number, Pearson's r of score and IoU pooled over every box of every object (§3.2, Fig. 3), mixes two
abilities: *recognition* (scoring boxes on an object above background boxes, and the right class high at all) and
*localisation-aware ranking* (among the boxes on one object, scoring the better-fitting ones higher), which is what
NMS keeps and what AP at high IoU rewards. The measures here (`MEASURES`, one row each in ``pcc.csv``):

- ``pooled_pcc``: today's pooled Pearson r, unchanged.
- ``positive_pcc``: Pearson r over the positives only, boxes with IoU ≥ ``positive_iou`` (0.5 by default).
- ``object_spearman`` / ``object_kendall``: for each ground truth with at least two positive boxes, Spearman's ρ and
  Kendall's τ-b (scipy's definitions, ties averaged) of those boxes' IoUs and scores, then the mean over objects,
  each object weighing the same. Objects whose positives have a constant IoU or score have no ρ or τ and are left out.
- ``nms_gap``: over the same objects, the mean of (best IoU among its positives − IoU of its top-scored positive);
  ``nms_near_best``: the share of objects whose top-scored positive is within `NEAR_BEST` (0.05) of the best. Boxes
  tied for the top score count by their mean IoU (the expectation of a random tie-break).
- the decomposition of the pooled r over the IoU bins of width 0.05 (`decomposition`): with m the score's per-bin
  mean, pooled r = ``curve_pcc`` · sqrt(``explained_share``) + ``within_bin``, where ``curve_pcc`` = corr(IoU,
  m(bin)) (how straight the mean-score curve is), ``explained_share`` = var(m) / var(score) (how much of the score
  varies with the IoU bin at all) and ``within_bin`` = the pooled within-bin covariance / (σ_IoU σ_score), the small
  rest that bins of width 0.05 leave.

Positives are the boxes whose IoU bin starts at or above the threshold (so the threshold is a multiple of 0.05 and
the positive sums are the bin sums above it, exactly). The sums stay streaming: Pearson and the decomposition come
from per-bin moment sums, and everything per object from one *object row* per (object, head) of per-object values
(`OBJECT_VALUES`) that merge by concatenation. Object rows also carry each object's moments and its per-IoU-bin sums
n, Σx, Σs, Σxs (`BIN_VALUES`), so every measure gets a 95% bootstrap interval over images
(`bootstrap.replicate_counts`): each measure is a function of per-image sums, and a replicate is a weighted sum of
them. Results written before the rows had bin sums (`MEASURES_FORMAT` 1) still give every point value and every
interval but the decomposition's; the analyses refuse to resume or reuse them (`check_measure_format`).

`object_values` (torch, on the analysis device) computes the object rows of many objects at once: sorts, scatter
sums and, for τ-b, Knight's merge count as one sorted search per merge level; no loop over objects. The table
functions need numpy and pandas only.
"""

from __future__ import annotations

import argparse

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dhanalysis.stats.bootstrap import interval, replicate_counts
from dhanalysis.stats.moments import NUM_BINS, pcc_from_moments
from dhanalysis.errors import DHError
from dhanalysis.vocab import ALIGNMENT_MEASURES

if TYPE_CHECKING:  # torch is imported by `object_values` alone: tables and figures read without it
    import torch

MEASURES = ALIGNMENT_MEASURES
DEFAULT_POSITIVE_IOU = 0.5
NEAR_BEST = 0.05
MEASURE_REPLICATES = 200  # `dhanalysis pcc --bootstrap`: descriptive intervals (see bootstrap.DEFAULT_REPLICATES)
MOMENT_NAMES = ("n", "sum_x", "sum_x2", "sum_s", "sum_s2", "sum_xs")
BIN_SUMS = ("n", "x", "s", "xs")  # what the decomposition needs of each IoU bin: n, Σx, Σs, Σxs
BIN_VALUES = tuple(f"bin{b}_{q}" for b in range(NUM_BINS) for q in BIN_SUMS)
# one object row: its moments over all its boxes, over its positives, what is measured per object, then its per-bin
# sums (bin-major: bin0_n, bin0_x, bin0_s, bin0_xs, bin1_n, ...)
OBJECT_VALUES = (*MOMENT_NAMES, *(f"pos_{m}" for m in MOMENT_NAMES), "n_pos", "spearman", "kendall", "top_iou",
                 "best_iou", *BIN_VALUES)
FIRST_BIN_VALUE = len(OBJECT_VALUES) - len(BIN_VALUES)
# 1: object rows without per-bin sums; 2: with them (the decomposition's intervals). Stored in every result's key.
MEASURES_FORMAT = 2
MEASURE_COLUMNS = ("measure", "n", "pcc", "ci_low", "ci_high")


def positive_bin(positive_iou: float) -> int:
    """The first IoU bin of the positives; a one-line `DHError` unless ``positive_iou`` is a bin edge in (0, 1)."""
    b = round(positive_iou * NUM_BINS)
    if not (0 < positive_iou < 1) or abs(b - positive_iou * NUM_BINS) > 1e-6:
        raise DHError(f"the positive IoU threshold must be a multiple of {1 / NUM_BINS:g} between 0 and 1 (an IoU "
                      f"bin edge), got {positive_iou}")
    return int(b)


# ------------------------------------------------------------------------------------------------ per object (torch)
def _runs(keys: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """For items already sorted by ``keys``: each item's run (equal keys) id ``(N,)`` and each run's length."""
    import torch

    n = len(keys[0])
    change = torch.zeros(n, dtype=torch.bool, device=keys[0].device)
    if n:
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    run = torch.cumsum(change.long(), 0) - 1
    return run, torch.bincount(run, minlength=int(run[-1]) + 1 if n else 0)


def _tie_pairs(group: torch.Tensor, run: torch.Tensor, length: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Σ over each group's runs of t (t − 1) / 2 ``(G,)`` float64 (``run``: each sorted item's run)."""
    import torch

    first = torch.zeros(len(length), dtype=torch.long, device=group.device)
    first.scatter_(0, run, group)
    t = length.double()
    return torch.zeros(num_groups, dtype=torch.float64, device=group.device).index_add_(0, first, t * (t - 1) / 2)


def _sort_by(keys: list[torch.Tensor]) -> torch.Tensor:
    """The permutation that sorts by ``keys`` (first key most significant), by stable sorts from the last key."""
    import torch

    order = torch.arange(len(keys[0]), device=keys[0].device)
    for k in reversed(keys):
        order = order[torch.sort(k[order], stable=True)[1]]
    return order


def _midranks(group: torch.Tensor, v: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Each item's 1-based rank of ``v`` within its group, ties averaged (scipy's ``rankdata``), ``(N,)`` float64."""
    import torch

    order = _sort_by([group, v])
    run, length = _runs([group[order], v[order]])
    position = torch.arange(len(v), device=v.device) - start[group[order]]  # 0-based place within the group
    first = torch.zeros(len(length), dtype=torch.long, device=v.device).scatter_reduce(
        0, run, position, "amin", include_self=False)
    ranks = torch.empty(len(v), dtype=torch.float64, device=v.device)
    ranks[order] = first[run].double() + (length[run].double() + 1) / 2
    return ranks


def _discordant(group: torch.Tensor, x: torch.Tensor, s: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Per group ``(G,)``, pairs ordered oppositely by x and s (ties in either are not discordant).

    Sorted by (group, x, s), a pair is discordant exactly when the earlier item has the larger s, so this counts
    inversions of s within each group by bottom-up merge levels (Knight): at level w every item in the right half of
    a block of 2w adds the items of the left half with a larger s, found by one sorted search over (block, s).
    """
    import torch

    order = _sort_by([group, x, s])
    g, sv = group[order], s[order]
    rank = torch.unique(sv, return_inverse=True)[1]
    top = int(rank.max()) + 1 if len(rank) else 1
    sizes = torch.bincount(g, minlength=num_groups)
    start = torch.cumsum(sizes, 0) - sizes
    position = torch.arange(len(g), device=g.device) - start[g]
    longest = int(sizes.max()) if num_groups else 0
    out = torch.zeros(num_groups, dtype=torch.float64, device=g.device)
    width = 1
    while width < longest:
        blocks = longest // (2 * width) + 1
        block = g * blocks + position // (2 * width)
        left = position % (2 * width) < width
        keys = torch.sort(block[left] * top + rank[left])[0]
        right_block, right_rank = block[~left], rank[~left]
        larger = (torch.searchsorted(keys, right_block * top + (top - 1), right=True)
                  - torch.searchsorted(keys, right_block * top + right_rank, right=True))
        out.index_add_(0, g[~left], larger.double())
        width *= 2
    return out


def _pearson(group: torch.Tensor, a: torch.Tensor, b: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Pearson r of a and b within each group ``(G,)`` (NaN where a or b is constant), centred per group."""
    import torch

    def per_group(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num_groups, dtype=torch.float64, device=v.device).index_add_(0, group, v)

    n = per_group(torch.ones_like(a))
    da = a - (per_group(a) / n.clamp(min=1))[group]
    db = b - (per_group(b) / n.clamp(min=1))[group]
    saa, sbb = per_group(da * da), per_group(db * db)
    r = per_group(da * db) / torch.sqrt(saa * sbb)
    ok = (n >= 2) & (saa > 1e-24) & (sbb > 1e-24)
    return torch.where(ok, r.clamp(-1.0, 1.0), torch.full_like(r, math.nan))


def moment_sums(group: torch.Tensor, x: torch.Tensor, s: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(G, 6)`` float64 per group: n, Σx, Σx², Σs, Σs², Σxs (`MOMENT_NAMES`)."""
    import torch

    x, s = x.double(), s.double()
    cols = torch.stack([torch.ones_like(x), x, x * x, s, s * s, x * s], dim=1)
    return torch.zeros(num_groups, 6, dtype=torch.float64, device=x.device).index_add_(0, group, cols)


def bin_sums(group: torch.Tensor, b: torch.Tensor, x: torch.Tensor, s: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``(G, NUM_BINS · 4)`` float64 per group: each IoU bin's n, Σx, Σs, Σxs (`BIN_VALUES`) of boxes ``(N,)`` in
    bins ``b``; one ``index_add_`` over (group, bin)."""
    import torch

    x, s = x.double(), s.double()
    cols = torch.stack([torch.ones_like(x), x, s, x * s], dim=1)
    out = torch.zeros(num_groups * NUM_BINS, len(BIN_SUMS), dtype=torch.float64, device=x.device)
    return out.index_add_(0, group * NUM_BINS + b, cols).reshape(num_groups, NUM_BINS * len(BIN_SUMS))


def object_values(group: torch.Tensor, x: torch.Tensor, s: torch.Tensor, positive: torch.Tensor,
                  num_groups: int, bins: torch.Tensor | None = None) -> torch.Tensor:
    """The object rows ``(G, len(OBJECT_VALUES))`` float64 of boxes ``(N,)`` on G objects.

    ``group``: each box's object 0..G-1; ``x``: its IoU with that object; ``s``: its score; ``positive``: bool, the
    boxes counted as positives; ``bins``: each box's IoU bin, as the caller's per-bin sums have it (default
    `stats.iou_bin` of ``x`` in its own dtype). ρ, τ-b, top and best IoU are over each object's positives and NaN
    where it has fewer than two; ρ and τ-b are also NaN where the positives' IoU or score is constant.
    """
    import torch

    from dhanalysis.stats.moments import iou_bin

    group = group.long()
    b = (iou_bin(x) if bins is None else bins).long()  # binned before the cast, as the statistics are
    x, s = x.double(), s.double()
    out = torch.full((num_groups, len(OBJECT_VALUES)), math.nan, dtype=torch.float64, device=x.device)
    out[:, :6] = moment_sums(group, x, s, num_groups)
    out[:, FIRST_BIN_VALUE:] = bin_sums(group, b, x, s, num_groups)
    g, xp, sp = group[positive], x[positive], s[positive]
    out[:, 6:12] = moment_sums(g, xp, sp, num_groups)
    n_pos = out[:, 6]
    out[:, 12] = n_pos
    if len(g) == 0:
        return out
    sizes = torch.bincount(g, minlength=num_groups)
    start = torch.cumsum(sizes, 0) - sizes
    many = n_pos >= 2
    spearman = _pearson(g, _midranks(g, xp, start), _midranks(g, sp, start), num_groups)
    out[:, 13] = torch.where(many, spearman, torch.full_like(spearman, math.nan))
    # τ-b = (n0 − n1 − n2 + n3 − 2D) / sqrt((n0 − n1)(n0 − n2)), n1 / n2 / n3 the pairs tied in x / s / both
    order = _sort_by([g, xp, sp])
    gx, xx, sx = g[order], xp[order], sp[order]
    run_x, len_x = _runs([gx, xx])
    run_xs, len_xs = _runs([gx, xx, sx])
    order_s = _sort_by([g, sp])
    run_s, len_s = _runs([g[order_s], sp[order_s]])
    n0 = n_pos * (n_pos - 1) / 2
    n1 = _tie_pairs(gx, run_x, len_x, num_groups)
    n2 = _tie_pairs(g[order_s], run_s, len_s, num_groups)
    n3 = _tie_pairs(gx, run_xs, len_xs, num_groups)
    tau = (n0 - n1 - n2 + n3 - 2 * _discordant(g, xp, sp, num_groups)) / torch.sqrt((n0 - n1) * (n0 - n2))
    ok = many & (n0 - n1 > 0) & (n0 - n2 > 0)
    out[:, 14] = torch.where(ok, tau.clamp(-1.0, 1.0), torch.full_like(tau, math.nan))
    top_score = torch.full((num_groups,), -math.inf, dtype=torch.float64, device=x.device)
    top_score = top_score.scatter_reduce(0, g, sp, "amax")
    at_top = (sp == top_score[g]).double()
    tied = torch.zeros(num_groups, dtype=torch.float64, device=x.device).index_add_(0, g, at_top)
    top_iou = torch.zeros(num_groups, dtype=torch.float64, device=x.device).index_add_(0, g, at_top * xp) / tied
    best = torch.full((num_groups,), -math.inf, dtype=torch.float64, device=x.device).scatter_reduce(0, g, xp, "amax")
    nan = torch.full_like(best, math.nan)
    out[:, 15] = torch.where(many, top_iou, nan)
    out[:, 16] = torch.where(many, best, nan)
    return out


# ------------------------------------------------------------------------------------------------ tables (numpy)
def score_bins(stats: pd.DataFrame) -> pd.DataFrame:
    """Per-bin score moments (`MOMENT_NAMES`) of a statistics table: the sliding-window table (its ``n_s`` windows
    with a score; cells of heads without a classifier left out) or the rpn / detection table (already so)."""
    if "bin" not in stats.columns:
        raise DHError("the statistics have no IoU bins: they were written before the alignment measures; rerun the "
                      "analysis with overwrite (--overwrite) to recompute them")
    if "n_s" in stats.columns:
        part = stats[stats["n_s"] > 0]
        return part.drop(columns=["n", "n_r", "sum_r", "sum_r2", "sum_xr"], errors="ignore").rename(
            columns={"n_s": "n"})
    return stats


def decomposition(total: np.ndarray, per_bin: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The decomposition of pooled r over IoU bins: measure -> (n, value) for ``curve_pcc``, ``explained_share`` and
    ``within_bin``, from total moments ``(..., 6)`` (`MOMENT_NAMES`) and per-bin sums ``(..., NUM_BINS, 4)``
    (`BIN_SUMS`: each bin's n, Σx, Σs, Σxs; empty bins are zeros). Leading axes are independent problems (groups,
    bootstrap replicates). NaN where there are fewer than two boxes or IoU or score is constant; ``curve_pcc`` also
    where the bin means are.

    With x̄_b, m_b the bin's mean IoU and score: var(m) = Σ_b n_b (m_b − s̄)² / n, cov(x, m) = Σ_b n_b (x̄_b − x̄)
    (m_b − s̄) / n, and the within-bin covariance Σ_b (Σxs_b − Σx_b Σs_b / n_b) / n.
    """
    total, per_bin = np.asarray(total, dtype=np.float64), np.asarray(per_bin, dtype=np.float64)
    n = total[..., 0]
    nb, sx, ss, sxs = (per_bin[..., j] for j in range(len(BIN_SUMS)))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_x, mean_s = total[..., 1] / n, total[..., 3] / n
        var_x = total[..., 2] / n - mean_x ** 2
        var_s = total[..., 4] / n - mean_s ** 2
        count = np.where(nb > 0, nb, 1.0)  # an empty bin adds 0 to every sum below
        dx, ds = sx / count - mean_x[..., None], ss / count - mean_s[..., None]
        var_m = (nb * ds * ds).sum(axis=-1) / n
        cov_xm = (nb * dx * ds).sum(axis=-1) / n
        within = (sxs - sx * ss / count).sum(axis=-1) / n
        ok = (n >= 2) & (var_x > 1e-18) & (var_s > 1e-18)
        curve = np.where(ok & (var_m > 1e-18), cov_xm / np.sqrt(var_x * var_m), np.nan)
        share = np.where(ok, var_m / var_s, np.nan)
        rest = np.where(ok, within / np.sqrt(var_x * var_s), np.nan)
    return {"curve_pcc": (n, np.clip(curve, -1, 1)), "explained_share": (n, np.clip(share, 0, 1)),
            "within_bin": (n, rest)}


def _bin_measures(bins: pd.DataFrame, by: list[str], first_positive: int) -> pd.DataFrame:
    """Pooled and positive PCC and the decomposition per group of ``by``, from per-bin sums: ``by`` …, measure, n,
    pcc (long form, intervals still to come)."""
    g = bins.groupby(by + ["bin"], sort=True, as_index=False, dropna=False)[list(MOMENT_NAMES)].sum()
    codes = g.groupby(by, sort=True, dropna=False).ngroup().to_numpy() if by else np.zeros(len(g), dtype=np.int64)
    m = g[list(MOMENT_NAMES)].to_numpy(np.float64)
    groups = int(codes.max()) + 1 if len(codes) else 0
    b = g["bin"].to_numpy().astype(np.int64)
    tot = np.zeros((groups, len(MOMENT_NAMES)))
    np.add.at(tot, codes, m)
    pos = np.zeros_like(tot)
    np.add.at(pos, codes[b >= first_positive], m[b >= first_positive])
    per_bin = np.zeros((groups, NUM_BINS, len(BIN_SUMS)))
    per_bin[codes, b] = m[:, [MOMENT_NAMES.index(k) for k in ("n", "sum_x", "sum_s", "sum_xs")]]  # one row a bin
    first = g.groupby(codes, sort=True)[by].first().reset_index(drop=True) if by else pd.DataFrame(index=[0])
    values = {"pooled_pcc": (tot[:, 0], pcc_from_moments(*tot.T)),
              "positive_pcc": (pos[:, 0], pcc_from_moments(*pos.T)), **decomposition(tot, per_bin)}
    parts = [first.assign(measure=name, n=count.round().astype(np.int64), pcc=value)
             for name, (count, value) in values.items()]
    return pd.concat(parts, ignore_index=True)


_MEASURE_SUMS = 19  # per-image sums of the measures other than the decomposition (`_image_columns`)


def _image_columns(rows: pd.DataFrame, image_pos: np.ndarray, num_images: int) -> np.ndarray:
    """``(images, 19 + NUM_BINS · 4)`` per-image sums of object rows: moments all (6) and positive (6), then Σρ, #ρ,
    Στ, #τ, Σgap, #gap, Σnear (the object measures as ratios of sums), then the per-bin sums (`BIN_VALUES`). Rows
    without bin sums (`MEASURES_FORMAT` 1) give the first 19 columns only."""
    v = rows[list(OBJECT_VALUES[:FIRST_BIN_VALUE])].to_numpy(np.float64)
    rho, tau = v[:, 13], v[:, 14]
    gap = v[:, 16] - v[:, 15]
    cols = [v[:, j] for j in range(12)]
    for value in (rho, tau):
        cols += [np.nan_to_num(value), np.isfinite(value).astype(np.float64)]
    has = np.isfinite(gap)
    cols += [np.nan_to_num(gap), has.astype(np.float64), (has & (gap <= NEAR_BEST + 1e-12)).astype(np.float64)]
    if set(BIN_VALUES) <= set(rows.columns):
        per_bin = rows[list(BIN_VALUES)].to_numpy(np.float64)
        cols += [per_bin[:, j] for j in range(per_bin.shape[1])]
    return np.stack([np.bincount(image_pos, weights=c, minlength=num_images) for c in cols], axis=1)


def _object_measures(sums: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """measure -> (n, value) from per-image sums ``(..., C)`` (`_image_columns`), totalled over images; the
    decomposition when the sums hold bins."""
    with np.errstate(divide="ignore", invalid="ignore"):
        def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)

        out = {"pooled_pcc": (sums[..., 0], pcc_from_moments(*(sums[..., j] for j in range(6)))),
               "positive_pcc": (sums[..., 6], pcc_from_moments(*(sums[..., j] for j in range(6, 12)))),
               "object_spearman": (sums[..., 13], ratio(sums[..., 12], sums[..., 13])),
               "object_kendall": (sums[..., 15], ratio(sums[..., 14], sums[..., 15])),
               "nms_gap": (sums[..., 17], ratio(sums[..., 16], sums[..., 17])),
               "nms_near_best": (sums[..., 17], ratio(sums[..., 18], sums[..., 17]))}
    if sums.shape[-1] > _MEASURE_SUMS:
        per_bin = sums[..., _MEASURE_SUMS:].reshape(*sums.shape[:-1], NUM_BINS, len(BIN_SUMS))
        out.update(decomposition(sums[..., :6], per_bin))
    return out


def _object_rows_measures(objects: pd.DataFrame, by: list[str], replicates: int, seed: int) -> pd.DataFrame:
    """Object measures (point values) and every measure's bootstrap interval over images, per group of ``by``."""
    images, image_pos = np.unique(objects["image_id"].to_numpy(), return_inverse=True)
    counts = replicate_counts(len(images), replicates, seed) if replicates > 0 else None
    rows = []
    grouped = objects.groupby(by, sort=True, dropna=False).indices if by else {(): np.arange(len(objects))}
    for key, index in grouped.items():
        key = key if isinstance(key, tuple) else (key,)
        part = objects.iloc[index]
        pos = image_pos[index]
        present, local = np.unique(pos, return_inverse=True)
        per_image = _image_columns(part, local, len(present))
        point = _object_measures(per_image.sum(axis=0))
        reps = _object_measures(counts[:, present] @ per_image) if counts is not None else None
        for name, (n, value) in point.items():
            lo, hi = interval(reps[name][1]) if reps is not None else (math.nan, math.nan)
            rows.append({**dict(zip(by, key)), "measure": name, "n": int(round(float(n))), "pcc": float(value),
                         "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=[*by, *MEASURE_COLUMNS])


def measure_table(bins: pd.DataFrame | None, objects: pd.DataFrame | None, by: Sequence[str],
                  positive_iou: float = DEFAULT_POSITIVE_IOU, replicates: int = MEASURE_REPLICATES,
                  seed: int = 0) -> pd.DataFrame:
    """Every measure (`MEASURES`) per group of ``by``: ``by`` …, measure, n, pcc (the value), ci_low, ci_high.

    ``bins``: per-bin score moments (`score_bins`); they give pooled and positive PCC and the decomposition, and are
    enough alone (an old results folder: the object measures are then left out). ``objects``: object rows (columns
    `OBJECT_VALUES`, ``image_id`` and ``by``); they give the object measures (and every other measure when there are
    no ``bins``) and, with ``replicates`` > 0, the 95% bootstrap intervals over images of every measure (drawn once,
    shared by every group; the decomposition's need rows with bin sums, `MEASURES_FORMAT` 2). ``n`` counts boxes
    (pooled, decomposition), positive boxes, or objects with a value (object measures).
    """
    by = list(by)
    parts = []
    if bins is not None and len(bins):
        part = _bin_measures(bins, by, positive_bin(positive_iou))
        parts.append(part.assign(ci_low=math.nan, ci_high=math.nan))
    if objects is not None and len(objects):
        rows = _object_rows_measures(objects, by, replicates, seed)
        if parts:  # point values of the bin-sum measures from the bins; their intervals from the object rows
            base = parts[0]
            merged = base.merge(rows[[*by, "measure", "ci_low", "ci_high"]], on=[*by, "measure"], how="left",
                                suffixes=("_bins", ""))
            base = merged.drop(columns=["ci_low_bins", "ci_high_bins"])
            rows = rows[~rows["measure"].isin(base["measure"].unique())]
            parts = [base, rows]
        else:
            parts.append(rows)
    if not parts:
        return pd.DataFrame(columns=[*by, *MEASURE_COLUMNS])
    table = pd.concat(parts, ignore_index=True)
    table["_m"] = table["measure"].map(MEASURES.index)
    table = table.sort_values([*by, "_m"], kind="stable").drop(columns="_m")
    return table[[*by, *MEASURE_COLUMNS]].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ object tables
OBJECT_KEYS = ("model", "head", "proposal_set", "image_id", "box", "category_id", "category", "size")
OBJECT_COLUMNS = (*OBJECT_KEYS, *OBJECT_VALUES)
ROW_KEYS = 6  # an object row tensor: head, proposal set, image id, box, class label 1..K, size index, then values


def object_row_tensor(head: int, proposal_set: int, image_id: int, box: torch.Tensor, label: torch.Tensor,
                      size: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``(G, ROW_KEYS + len(OBJECT_VALUES))`` float64 chunk rows of G objects' values (`object_values`); ``box`` is
    each object's position in the image's annotations (-1: boxes that overlap no object)."""
    import torch

    keys = [torch.full_like(values[:, 0], head), torch.full_like(values[:, 0], proposal_set),
            torch.full_like(values[:, 0], image_id), box.double(), label.double(), size.double()]
    return torch.cat([torch.stack(keys, dim=1), values], dim=1).cpu()


def object_frame(rows: np.ndarray, heads: Sequence[str], sets: Sequence[str], model: str,
                 category_ids: Sequence[int], category_names: Sequence[str]) -> pd.DataFrame:
    """The tidy object table (`OBJECT_COLUMNS`) of chunk rows ``(R, ROW_KEYS + len(OBJECT_VALUES))``
    (`object_row_tensor`)."""
    from dhanalysis.vocab import SIZE_GROUPS

    a = np.asarray(rows, dtype=np.float64).reshape(-1, ROW_KEYS + len(OBJECT_VALUES))
    label = a[:, 4].astype(np.int64) - 1
    frame = pd.DataFrame({
        "model": model,
        "head": np.asarray(list(heads), dtype=object)[a[:, 0].astype(np.int64)],
        "proposal_set": np.asarray(list(sets), dtype=object)[a[:, 1].astype(np.int64)],
        "image_id": a[:, 2].astype(np.int64), "box": a[:, 3].astype(np.int64),
        "category_id": np.asarray(category_ids, dtype=np.int64)[label],
        "category": np.asarray(category_names, dtype=object)[label],
        "size": np.asarray(SIZE_GROUPS, dtype=object)[a[:, 5].astype(np.int64)],
    })
    frame = pd.concat([frame, pd.DataFrame(a[:, ROW_KEYS:], columns=list(OBJECT_VALUES))], axis=1)
    for name in ("n", "pos_n", "n_pos", *(f"bin{b}_n" for b in range(NUM_BINS))):
        frame[name] = frame[name].round().astype(np.int64)
    return frame


def check_measure_format(stored: object, folder: object, what: str) -> None:
    """A one-line `FolderTaken` when a finished record (its key ``stored``) predates the alignment measures (no
    per-object rows) or today's object rows (``measures_format`` other than `MEASURES_FORMAT`: rows without per-bin
    sums, so no interval for the decomposition): resuming or reusing it would mix formats."""
    from dhanalysis.folders import FolderTaken

    if not isinstance(stored, dict):
        return
    if "positive_iou" not in stored:
        raise FolderTaken(folder, f"{folder} holds {what} written before the alignment measures (no per-object rows)")
    found = stored.get("measures_format", 1)
    if found != MEASURES_FORMAT:
        raise FolderTaken(folder, f"{folder} holds {what} with object rows of measures format {found}, written "
                                  f"before format {MEASURES_FORMAT} (per-IoU-bin sums, the decomposition's intervals)")


# ------------------------------------------------------------------------------------------------ a results file
RESULTS_MEASURE_COLUMNS = ("score_field", "grouping", "group", *MEASURE_COLUMNS)


def results_measures(table: pd.DataFrame, score_fields: Sequence[str] = ("score",), iou: str = "iou",
                     positive_iou: float = DEFAULT_POSITIVE_IOU, replicates: int = MEASURE_REPLICATES,
                     seed: int = 0) -> pd.DataFrame:
    """Every measure of the detections of a results file, per score field, overall, per size group and per class
    (`RESULTS_MEASURE_COLUMNS`, the columns of ``pcc.csv`` with ``score_field`` for head and set).

    ``table``: one row per detection with ``image_id``, ``category_id``, ``category``, ``size``, ``iou`` (with its
    best same-class ground truth), ``gt`` (that ground truth's id, -1 none) and the score fields
    (`dhanalysis.metrics.detections.detection_table`). An object is a ground truth with the detections matched to
    it; detections that overlap none are kept per (image, class, size) as boxes on no object.
    """
    bins, objects = results_objects(table, score_fields, iou, positive_iou)
    parts = []
    for grouping, column in (("all", None), ("size", "size"), ("class", "category")):
        by = ["score_field"] + ([column] if column else [])
        part = measure_table(bins, objects, by, positive_iou, replicates, seed)
        part = part.rename(columns={column: "group"}) if column else part.assign(group="all")
        parts.append(part.assign(grouping=grouping))
    if not len(table):
        return pd.DataFrame(columns=list(RESULTS_MEASURE_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(RESULTS_MEASURE_COLUMNS)]


def results_objects(table: pd.DataFrame, score_fields: Sequence[str] = ("score",), iou: str = "iou",
                    positive_iou: float = DEFAULT_POSITIVE_IOU) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(per-bin score moments, object rows) of a results file's detections (`results_measures`' ``table``), each
    with a ``score_field`` column: what `measure_table` measures, and what `image_measure_sums` resamples."""
    import torch

    first = positive_bin(positive_iou)
    x = table[iou].to_numpy(np.float64)
    b = np.minimum((x * NUM_BINS).astype(np.int64), NUM_BINS - 1)
    on = (table["gt"].to_numpy() >= 0) & (x > 0)
    keys = pd.DataFrame({"gt": np.where(on, table["gt"].to_numpy(), -1), "image_id": table["image_id"].to_numpy(),
                         "category_id": np.where(on, -1, table["category_id"].to_numpy()),
                         "size": np.where(on, "", table["size"].to_numpy().astype(str))})
    group = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()
    count = int(group.max()) + 1 if len(group) else 0
    first_row = pd.Series(np.arange(len(table))).groupby(group).first().to_numpy()
    described = table.iloc[first_row][["image_id", "category_id", "category", "size"]].reset_index(drop=True)
    described["box"] = np.where(on[first_row], table["gt"].to_numpy()[first_row], -1)
    bins, objects = [], []
    for field in score_fields:
        s = table[field].to_numpy(np.float64)
        values = object_values(torch.tensor(group), torch.tensor(x), torch.tensor(s), torch.tensor(b >= first),
                               count, torch.tensor(b)).numpy()
        objects.append(pd.concat([described.assign(score_field=field),
                                  pd.DataFrame(values, columns=list(OBJECT_VALUES))], axis=1))
        part = pd.DataFrame({"score_field": field, "category": table["category"].to_numpy(),
                             "size": table["size"].to_numpy(), "bin": b, "n": 1.0, "sum_x": x, "sum_x2": x * x,
                             "sum_s": s, "sum_s2": s * s, "sum_xs": x * s})
        bins.append(part.groupby(["score_field", "category", "size", "bin"], as_index=False).sum())
    bins = pd.concat(bins, ignore_index=True) if bins else None
    objects = pd.concat(objects, ignore_index=True) if objects else None
    return bins, objects


def image_measure_sums(objects: pd.DataFrame, image_ids: Sequence[int]) -> np.ndarray:
    """``(len(image_ids), C)`` per-image sums of object rows (one score field's) on the images ``image_ids`` (an
    image without rows adds zeros): any weighted total of them, such as a bootstrap replicate's ``counts @ sums``,
    gives every measure through `measures_of_sums`. Rows of images outside ``image_ids`` are a `DHError`."""
    ids = np.asarray(image_ids, np.int64)
    order = np.argsort(ids, kind="stable")
    row_ids = objects["image_id"].to_numpy(np.int64)
    found = np.searchsorted(ids, row_ids, sorter=order)
    found = np.minimum(found, len(ids) - 1)
    position = order[found] if len(ids) else found
    outside = ids[position] != row_ids if len(ids) else np.ones(len(row_ids), bool)
    if outside.any():
        raise DHError(f"object rows of image {row_ids[outside.argmax()]}, which is not among the {len(ids)} images "
                      "resampled")
    return _image_columns(objects, position, len(ids))


def measures_of_sums(sums: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """measure -> (n, value) of per-image sums totalled over images (`image_measure_sums`), with leading axes kept
    (replicates): pooled and positive PCC, the object measures and, with bin sums, the decomposition."""
    return _object_measures(sums)


def add_positive_iou_argument(parser: argparse.ArgumentParser) -> None:
    """--positive-iou: the boxes the localisation measures rank (sliding-window, pcc, detections, compare); the one
    flag of this module, beside its default, so that a command at any floor above can offer it."""
    parser.add_argument("--positive-iou", type=float, default=DEFAULT_POSITIVE_IOU, metavar="T",
                        help=f"boxes with IoU >= T are the positives of the alignment measures (PCC among positives, "
                             f"rank correlation within each object, the NMS gap); a multiple of 0.05 (default "
                             f"{DEFAULT_POSITIVE_IOU})")

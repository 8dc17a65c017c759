"""Does a detection's score track how well its box is localised? Score–IoU alignment of any detector.

The paper's Fig. 3 (right, "NMS") and Fig. 2 (top) asked of detections read from a results file: for each score
field (the detection score, or any other per-detection score such as each head's), Pearson, Spearman and Kendall
(tau-b) correlation of score and IoU overall, per size group and per class, with bootstrap intervals over images;
the mean and std of the score per IoU bin; a 20 × 20 histogram of (IoU, score).

Calibration asks the other half (is a detection with score s a true positive with probability s?) and lives in
`dhanalysis.metrics.calibration`.

The intervals are a bootstrap over images. Pearson's replicates are exact (per-image moment sums); so are Spearman's
and Kendall's in groups below `LINEAR_FROM` detections (`ResamplePlan`, O(N log N) per replicate). From there up they
are first order (`LinearResamplePlan`): each detection's derivative of tau-b and Spearman in its weight is computed
once in O(N log N), and a replicate costs O(images) — why: at 500,000 detections, 84 groups and 1,000 replicates the
exact bootstrap took ~380 s. Its spread matches the exact one's within ~1% there, and the coverage of its 95%
intervals, simulated with image clustering and a known truth, is 0.95 (tests/test_alignment_bootstrap.py).

Inputs are the per-detection table of `dhanalysis.metrics.detections` (columns image_id, category_id, size, iou,
tp_50, … and the score fields); everything here is numpy, pandas and scipy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import stats

from dhanalysis.stats.bootstrap import interval, replicate_counts
from dhanalysis.stats.moments import pcc_from_moments
from dhanalysis.vocab import SIZE_GROUPS

NUM_BINS = 20  # IoU bins of width 0.05, as the sliding-window statistics
HIST_BINS = 20  # score bins of the 2-D histogram
# groups of this many detections or more take the linear bootstrap of Spearman and Kendall (module docstring)
LINEAR_FROM = 1000
ALIGNMENT_REPLICATES = 100  # `dhanalysis detections --bootstrap`: descriptive intervals (bootstrap.DEFAULT_REPLICATES)
CORRELATIONS = ("pearson", "spearman", "kendall")
ALIGNMENT_COLUMNS = ("score_field", "grouping", "group", "n", *(f"{c}{s}" for c in CORRELATIONS
                                                                for s in ("", "_lo", "_hi")))
BIN_COLUMNS = ("score_field", "size", "bin", "iou_lo", "iou_hi", "n", "score_mean", "score_std")
HIST_COLUMNS = ("score_field", "iou_bin", "score_bin", "iou_lo", "iou_hi", "score_lo", "score_hi", "count")


def correlations(x: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman and Kendall tau-b of ``x`` and ``s`` (scipy's); NaN when fewer than 3 points or either is
    constant."""
    if len(x) < 3 or np.ptp(x) < 1e-9 or np.ptp(s) < 1e-9:  # constant up to rounding (perfect boxes: IoU 1 - 1e-16)
        return dict.fromkeys(CORRELATIONS, float("nan"))
    return {"pearson": float(stats.pearsonr(x, s)[0]), "spearman": float(stats.spearmanr(x, s)[0]),
            "kendall": float(stats.kendalltau(x, s)[0])}


def _groups(table: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(grouping, group, row mask): all, each size group, each class (by its name)."""
    out = [("all", "all", np.ones(len(table), dtype=bool))]
    out += [("size", g, (table["size"] == g).to_numpy()) for g in SIZE_GROUPS]
    # one factorisation of the class names, then integer comparisons (not 80 string scans of 500k rows)
    names, codes = np.unique(table["category"].to_numpy().astype(str), return_inverse=True)
    out += [("class", str(name), codes == k) for k, name in enumerate(names)]
    return out


def _weighted_moments(x: np.ndarray, s: np.ndarray, pos: np.ndarray, num_images: int) -> np.ndarray:
    """``(num_images, 6)`` per image: the count and Σx, Σx², Σs, Σs², Σxs of its items (``pos``: each item's image),
    so that a resample's moments are its image counts times this matrix."""
    columns = (np.ones_like(x), x, x * x, s, s * s, x * s)
    return np.stack([np.bincount(pos, weights=c, minlength=num_images) for c in columns], axis=1)


def _image_ranges(values: Sequence[np.ndarray], pos: np.ndarray, num_images: int) -> list[tuple[np.ndarray, ...]]:
    """Per image, the (min, max) of each of ``values`` (inf, −inf for an image without items), for the rule of
    `correlations` that a constant resample is NaN."""
    out = []
    for v in values:
        lo, hi = np.full(num_images, np.inf), np.full(num_images, -np.inf)
        np.minimum.at(lo, pos, v)
        np.maximum.at(hi, pos, v)
        out.append((lo, hi))
    return out


def _degenerate(counts: np.ndarray, sizes: np.ndarray, ranges: list[tuple[np.ndarray, ...]]) -> np.ndarray:
    """``(B,)`` the resamples `correlations` calls NaN: fewer than 3 points, or x or s constant over the drawn images
    (``sizes``: each image's number of items)."""
    present = counts > 0
    degenerate = counts @ sizes < 3
    for lo, hi in ranges:
        spread = np.where(present, hi, -np.inf).max(axis=1) - np.where(present, lo, np.inf).min(axis=1)
        degenerate |= spread < 1e-9
    return degenerate


class _TieGroups:
    """Items grouped by equal values of ``keys`` (each (N,)), in sorted order: ``order`` sorts the items, ``starts``
    is where each group begins in it, ``group`` is each sorted item's group."""

    def __init__(self, keys: list[np.ndarray]):
        self.order = np.lexsort(keys[::-1])
        stacked = np.stack([k[self.order] for k in keys])
        self.starts = np.flatnonzero(np.r_[True, (stacked[:, 1:] != stacked[:, :-1]).any(axis=0)])
        self.group = np.repeat(np.arange(len(self.starts)), np.diff(np.r_[self.starts, len(self.order)]))

    def weights(self, w_sorted: np.ndarray) -> np.ndarray:
        """``(B, groups)`` each group's weight, from the weights already in ``order``."""
        return np.add.reduceat(w_sorted, self.starts, axis=1)


def _pairs(t: np.ndarray) -> np.ndarray:
    """``(B,)`` pairs within groups of weights ``t`` (B, groups): Σ_g t_g (t_g − 1) / 2."""
    return (t * (t - 1) / 2).sum(axis=1)


def _midranks(t: np.ndarray) -> np.ndarray:
    """``(B, groups)`` scipy's average rank (1-based, ties averaged) of each group of weights ``t`` in value order:
    the weight of the smaller values plus (the group's weight + 1) / 2."""
    return np.cumsum(t, axis=1) - t + (t + 1) / 2


class ResamplePlan:
    """Pearson, Spearman and Kendall (tau-b) of many resamples of the same points, exactly the statistics of the
    resampled arrays without building them; everything that depends on the points only is built once. O(N log N)
    per replicate: used below `LINEAR_FROM` points, and the reference of `LinearResamplePlan`'s tests.

    A resample is given by how often each image is drawn (``counts``, B × images; ``pos``: each point's image), and a
    point appears as often as its image. Pearson then needs only each image's moment sums; Spearman the weights of the
    tie groups of x and of s (their mid-ranks) and one weighted cross product; tau-b the weighted count of discordant
    pairs by bottom-up merge levels (Knight's algorithm): with the points sorted by (x, s) a pair is discordant exactly
    when the earlier one has the larger s, and at each level every element of a block's right half adds the weight of
    its left half with larger s (a segmented cumulative sum read at precomputed positions). tau-b = (n0 − n1 − n2 +
    n3 − 2 D) / sqrt((n0 − n1)(n0 − n2)), as scipy.
    """

    def __init__(self, x: np.ndarray, s: np.ndarray, pos: np.ndarray, num_images: int | None = None):
        self.n = len(x)
        self.pos = np.asarray(pos, dtype=np.int64)
        num_images = int(self.pos.max(initial=-1)) + 1 if num_images is None else num_images
        xc, sc = x - x.mean(), s - s.mean()  # centred: the moments then lose no digits
        self.moments = _weighted_moments(xc, sc, self.pos, num_images)
        self.ranges = _image_ranges((x, s), self.pos, num_images)
        self.xs = _TieGroups([x, s])  # sorted by (x, s): Knight's order, and the x groups are runs of it
        self.x_starts = np.flatnonzero(np.r_[True, x[self.xs.order][1:] != x[self.xs.order][:-1]])
        self.x_group = np.repeat(np.arange(len(self.x_starts)), np.diff(np.r_[self.x_starts, self.n]))
        self.s_groups = _TieGroups([s])
        # each point of the (x, s) order: its s group
        s_group = np.empty(self.n, dtype=np.int64)
        s_group[self.s_groups.order] = self.s_groups.group
        self.s_group_xs = s_group[self.xs.order]
        self.pos_xs, self.pos_s = self.pos[self.xs.order], self.pos[self.s_groups.order]
        rank = np.unique(s[self.xs.order], return_inverse=True)[1].astype(np.int64)
        top = int(rank.max(initial=0)) + 1
        width, self.levels = 1, []
        index = np.arange(self.n)
        while width < self.n:
            block = index // (2 * width)
            is_left = index % (2 * width) < width
            left, right = index[is_left], index[~is_left]
            perm = left[np.lexsort((rank[left], block[left]))]
            keys = block[perm] * top + rank[perm]
            upto = np.searchsorted(keys, block[right] * top + rank[right], side="right")
            end = np.searchsorted(keys, block[right] * top + (top - 1), side="right")
            self.levels.append((perm, right, upto, end))
            width *= 2

    def replicates(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Each correlation of every resample: ``counts`` (B, images), how often each image is drawn."""
        if self.n < 3:
            return {c: np.full(len(counts), np.nan) for c in CORRELATIONS}
        out = {"pearson": pcc_from_moments(*(counts @ self.moments).T)}
        w = counts[:, self.pos_xs]  # (B, N) each point's weight, in the (x, s) order
        total = w.sum(axis=1)
        tx, txs = np.add.reduceat(w, self.x_starts, axis=1), self.xs.weights(w)
        ts = self.s_groups.weights(counts[:, self.pos_s])
        mean = (total[:, None] + 1) / 2
        rx, rs = _midranks(tx) - mean, _midranks(ts) - mean  # centred mid-ranks: their weighted sums are 0
        cross = (w * rx[:, self.x_group] * rs[:, self.s_group_xs]).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["spearman"] = np.clip(cross / np.sqrt((tx * rx * rx).sum(axis=1) * (ts * rs * rs).sum(axis=1)),
                                      -1.0, 1.0)
            out["kendall"] = self._tau_b(w, total, _pairs(tx), _pairs(ts), _pairs(txs))
        degenerate = _degenerate(counts, self.moments[:, 0], self.ranges)
        for c in CORRELATIONS:
            out[c][degenerate] = np.nan
        return out

    def _tau_b(self, w: np.ndarray, total: np.ndarray, n1: np.ndarray, n2: np.ndarray, n3: np.ndarray) -> np.ndarray:
        # float32 is exact here (integer weights, partial sums below 2^24 points) and halves the memory traffic
        wo = w.astype(np.float32)
        discordant = np.zeros(len(w))
        zero = np.zeros((len(w), 1), dtype=np.float32)
        for perm, right, upto, end in self.levels:
            c = np.concatenate([zero, np.cumsum(wo[:, perm], axis=1)], axis=1)
            discordant += (wo[:, right] * (c[:, end] - c[:, upto])).sum(axis=1, dtype=np.float64)
        n0 = total * (total - 1) / 2
        tau = (n0 - n1 - n2 + n3 - 2 * discordant) / np.sqrt((n0 - n1) * (n0 - n2))
        return np.clip(tau, -1.0, 1.0)


def _dense_ranks(v: np.ndarray) -> np.ndarray:
    """``(N,)`` each value's index among the sorted distinct values (equal values, equal rank)."""
    return np.unique(v, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _tie_sizes(rank: np.ndarray) -> np.ndarray:
    """``(N,)`` how many points share each point's rank (itself included)."""
    return np.bincount(rank)[rank].astype(np.float64)


def _discordant_counts(rx: np.ndarray, rs: np.ndarray) -> np.ndarray:
    """``(N,)`` for each point, how many others it is discordant with (x and s strictly in opposite orders).

    Sorted by (x, s), a pair is discordant exactly when the earlier point has the larger s (equal x puts the smaller
    s first). Bottom-up merge levels: in each block of width 2w, every right-half point counts the left-half points
    with larger s, and every left-half point the right-half points with smaller s; each pair meets in one block."""
    order = np.lexsort((rs, rx))
    rank = rs[order]
    n, top = len(rank), int(rank.max(initial=0)) + 1
    index = np.arange(n)
    counts = np.zeros(n)
    width = 1
    while width < n:
        block = index // (2 * width)
        is_left = index % (2 * width) < width
        left, right = index[is_left], index[~is_left]
        key_l, key_r = block[left] * top + rank[left], block[right] * top + rank[right]
        sorted_l, sorted_r = np.sort(key_l), np.sort(key_r)
        counts[right] += (np.searchsorted(sorted_l, (block[right] + 1) * top, side="left")
                          - np.searchsorted(sorted_l, key_r, side="right"))
        counts[left] += (np.searchsorted(sorted_r, key_l, side="left")
                         - np.searchsorted(sorted_r, block[left] * top, side="left"))
        width *= 2
    out = np.empty(n)
    out[order] = counts
    return out


def _signed_sums(rank: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(N,)`` for each point k, Σ_i sgn(key_i − key_k) v_i: the sum of ``v`` over larger keys less that over
    smaller ones (``rank``: dense ranks of the key)."""
    per_key = np.bincount(rank, weights=v)
    below = np.cumsum(per_key) - per_key
    return (per_key.sum() - below - per_key - below)[rank]


def _centred_midranks(rank: np.ndarray) -> np.ndarray:
    """``(N,)`` scipy's mid-rank (ties averaged) of each point less the mean rank (N + 1) / 2."""
    sizes = np.bincount(rank).astype(np.float64)
    return (np.cumsum(sizes) - sizes / 2 - sizes.sum() / 2)[rank]


def _rank_components(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The U-statistic pieces of tau-b and Spearman at unit weights and each point's derivative.

    Returns ``values`` (6,) = S, A, B (tau-b = S / sqrt(A B): concordant less discordant pairs, pairs untied in x,
    pairs untied in s) and C, Vx, Vs (Spearman = C / sqrt(Vx Vs): Σ rx rs, Σ rx², Σ rs² of the centred mid-ranks),
    and ``derivatives`` (N, 6): each one's derivative in the point's weight at weight 1 (a point of weight w stands
    for w copies). S, A, B are ½ Σ_{i≠j} w_i w_j k_ij, so the derivative is Σ_{j≠i} k_ij; a centred mid-rank moves
    by ½ sgn(x_i − x_k) per unit of w_k, which gives C's, Vx's and Vs's."""
    n = len(x)
    rx, rs = _dense_ranks(x), _dense_ranks(s)
    tx, ts = _tie_sizes(rx), _tie_sizes(rs)
    txs = _tie_sizes(_dense_ranks(rx * (int(rs.max(initial=0)) + 1) + rs))
    untied = n - tx - ts + txs  # the others tied with the point in neither x nor s
    k = untied - 2 * _discordant_counts(rx, rs)  # concordant less discordant partners
    cx, cs = _centred_midranks(rx), _centred_midranks(rs)
    derivatives = np.stack([k, n - tx, n - ts,
                            cx * cs + (_signed_sums(rx, cs) + _signed_sums(rs, cx)) / 2,
                            cx * cx + _signed_sums(rx, cx), cs * cs + _signed_sums(rs, cs)], axis=1)
    values = np.array([k.sum() / 2, (n - tx).sum() / 2, (n - ts).sum() / 2, cx @ cs, cx @ cx, cs @ cs])
    return values, derivatives


def _linear_influence(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (2,): tau-b and Spearman at unit weights; ``gradient`` (N, 2): each one's derivative in a point's
    weight there, by the quotient rule on `_rank_components` (both are ratios of degree 0 in the weights, so the
    derivatives sum to 0 and a resample's size moves them only through which images it holds)."""
    (S, A, B, C, Vx, Vs), d = _rank_components(x, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau, rho = S / np.sqrt(A * B), C / np.sqrt(Vx * Vs)
        gradient = np.stack([d[:, 0] / np.sqrt(A * B) - tau / 2 * (d[:, 1] / A + d[:, 2] / B),
                             d[:, 3] / np.sqrt(Vx * Vs) - rho / 2 * (d[:, 4] / Vx + d[:, 5] / Vs)], axis=1)
    return np.array([tau, rho]), gradient


class LinearResamplePlan:
    """Pearson exactly, Spearman and Kendall (tau-b) to first order, of many image resamples of the same points;
    the interface of `ResamplePlan` (``num_images`` only for it), each replicate costing O(images), not O(N log N).

    With point weights w (a point of weight w stands for w copies; a resample gives each point its image's draw
    count c_g), tau-b = S / sqrt(A B) and Spearman = C / sqrt(Vx Vs) are smooth functions of w (`_rank_components`).
    A replicate is their tangent at the unit weights: tau* = tau + Σ_g (c_g − 1) T_g, T_g the sum over image g's
    points of tau's derivative (`_linear_influence`); likewise Spearman. This is the linear bootstrap (infinitesimal
    jackknife) of the U-statistics; the derivatives need one sort and merge count, O(N log N), once. Used from
    `LINEAR_FROM` points up (`resample_plan`), where its replicates' spread matches the exact bootstrap's within
    about 1%; coverage is measured by tests/test_alignment_bootstrap.py."""

    def __init__(self, x: np.ndarray, s: np.ndarray, pos: np.ndarray, num_images: int | None = None):
        self.n = len(x)
        self.images, local = np.unique(np.asarray(pos, dtype=np.int64), return_inverse=True)  # those with points
        local = local.reshape(-1)
        xc, sc = x - x.mean(), s - s.mean()
        self.moments = _weighted_moments(xc, sc, local, len(self.images))
        self.ranges = _image_ranges((x, s), local, len(self.images))
        self.values, gradient = _linear_influence(x, s) if self.n >= 3 else (np.zeros(2), np.zeros((self.n, 2)))
        self.slopes = np.stack([np.bincount(local, weights=g, minlength=len(self.images)) for g in gradient.T],
                               axis=1)

    def replicates(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """Each correlation of every resample: ``counts`` (B, images), how often each image is drawn."""
        if self.n < 3:
            return {c: np.full(len(counts), np.nan) for c in CORRELATIONS}
        drawn = counts[:, self.images]
        out = {"pearson": pcc_from_moments(*(drawn @ self.moments).T)}
        kendall, spearman = (self.values + (drawn - 1) @ self.slopes).T
        out["kendall"], out["spearman"] = np.clip(kendall, -1.0, 1.0), np.clip(spearman, -1.0, 1.0)
        degenerate = _degenerate(drawn, self.moments[:, 0], self.ranges)
        for c in CORRELATIONS:
            out[c][degenerate] = np.nan
        return out


def resample_plan(x: np.ndarray, s: np.ndarray, pos: np.ndarray, num_images: int, exact: bool = False
                  ) -> ResamplePlan | LinearResamplePlan:
    """The exact plan below `LINEAR_FROM` points (or when ``exact``), where it is cheap and the first-order one
    drifts from it (module docstring), the linear plan from there up."""
    return ResamplePlan(x, s, pos, num_images) if exact or len(x) < LINEAR_FROM else LinearResamplePlan(x, s, pos)


def _usable_cores() -> int:
    """The cores this process may run on (its affinity, where the platform reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _all_replicates(plan: ResamplePlan | LinearResamplePlan, counts: np.ndarray, chunk: int
                    ) -> dict[str, np.ndarray]:
    """Every resample's correlations: at once for the linear plan (O(B · images)); ``chunk`` resamples at a time for
    the exact one, whose (chunk, N) weight arrays bound the memory."""
    if isinstance(plan, LinearResamplePlan):
        return plan.replicates(counts)
    chunks = [counts[start:start + chunk] for start in range(0, len(counts), chunk)]
    # numpy's gathers, sums and sorts release the interpreter lock: chunks of resamples run on every core
    # (1.4x on two), each chunk's arithmetic the same whichever thread runs it
    with ThreadPoolExecutor(max_workers=max(1, min(len(chunks), _usable_cores()))) as pool:
        parts = list(pool.map(plan.replicates, chunks))
    return {c: np.concatenate([p[c] for p in parts]) for c in CORRELATIONS}


def alignment_table(table: pd.DataFrame, score_fields: Sequence[str] = ("score",), iou: str = "iou",
                    replicates: int = ALIGNMENT_REPLICATES, seed: int = 0, chunk: int = 8,
                    exact: bool = False) -> pd.DataFrame:
    """One row per (score field, grouping, group): n and each correlation of IoU and score with its 95% bootstrap
    interval over images (``replicates`` resamples of the images with replacement; 0: no intervals). Pearson's
    replicates are exact; from `LINEAR_FROM` detections in a group, Spearman's and Kendall's are the linear bootstrap
    (`LinearResamplePlan`), below it or when ``exact`` the exact one (`ResamplePlan`: each resample recomputed from
    every detection of the drawn images, ``chunk`` resamples at a time). Groups with fewer than 3 detections or a
    constant score or IoU get NaN."""
    images, image_pos = np.unique(table["image_id"].to_numpy(), return_inverse=True)
    counts = replicate_counts(len(images), replicates, seed) if replicates > 0 else np.zeros((0, len(images)))
    x_all = table[iou].to_numpy(np.float64)
    rows = []
    for field in score_fields:
        s_all = table[field].to_numpy(np.float64)
        for grouping, group, mask in _groups(table):
            x, s, pos = x_all[mask], s_all[mask], image_pos[mask]
            row = {"score_field": field, "grouping": grouping, "group": group, "n": int(mask.sum()),
                   **correlations(x, s)}
            draws = {}
            if len(counts) and len(x) >= 3:
                plan = resample_plan(x, s, pos, len(images), exact)
                draws = _all_replicates(plan, counts, chunk)
            for c in CORRELATIONS:
                row[f"{c}_lo"], row[f"{c}_hi"] = interval(draws[c]) if c in draws else (np.nan, np.nan)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(ALIGNMENT_COLUMNS))


def iou_bins(iou: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Bin index of each IoU in [0, 1]: width 1 / num_bins, IoU 1 in the last bin."""
    return np.minimum((np.asarray(iou) * num_bins).astype(np.int64), num_bins - 1)


def bin_table(table: pd.DataFrame, score_fields: Sequence[str] = ("score",), iou: str = "iou") -> pd.DataFrame:
    """Mean and std (ddof 0) of each score field per IoU bin, for all detections and per size group (Fig. 2 top)."""
    b = iou_bins(table[iou].to_numpy())
    rows = []
    for field in score_fields:
        for size in ("all", *SIZE_GROUPS):
            part = table if size == "all" else table[table["size"] == size]
            pb = b if size == "all" else b[(table["size"] == size).to_numpy()]
            grouped = pd.Series(part[field].to_numpy(np.float64)).groupby(pb)
            for k, values in grouped:
                rows.append({"score_field": field, "size": size, "bin": int(k), "iou_lo": k / NUM_BINS,
                             "iou_hi": (k + 1) / NUM_BINS, "n": len(values), "score_mean": values.mean(),
                             "score_std": values.std(ddof=0)})
    return pd.DataFrame(rows, columns=list(BIN_COLUMNS))


def histogram_table(table: pd.DataFrame, score_fields: Sequence[str] = ("score",), iou: str = "iou") -> pd.DataFrame:
    """Counts of detections per (IoU bin, score bin) cell, 20 × 20 over [0, 1]², every cell listed."""
    rows = []
    edges = np.linspace(0, 1, HIST_BINS + 1)
    for field in score_fields:
        s = np.clip(table[field].to_numpy(np.float64), 0, 1)
        counts, _, _ = np.histogram2d(table[iou].to_numpy(np.float64), s, bins=[edges, edges])
        i, j = np.meshgrid(np.arange(HIST_BINS), np.arange(HIST_BINS), indexing="ij")
        rows.append(pd.DataFrame({"score_field": field, "iou_bin": i.ravel(), "score_bin": j.ravel(),
                                  "iou_lo": edges[i.ravel()], "iou_hi": edges[i.ravel() + 1],
                                  "score_lo": edges[j.ravel()], "score_hi": edges[j.ravel() + 1],
                                  "count": counts.ravel().astype(np.int64)}))
    return pd.concat(rows, ignore_index=True)[list(HIST_COLUMNS)]


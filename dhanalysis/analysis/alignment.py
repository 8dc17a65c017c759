"""Does a detection's score track how well its box is localised? Score–IoU alignment and calibration of any detector.

The paper's Fig. 3 (right, "NMS") and Fig. 2 (top) asked of detections read from a results file: for each score
field (the detection score, or any other per-detection score such as each head's), Pearson, Spearman and Kendall
(tau-b) correlation of score and IoU overall, per size group and per class, with bootstrap intervals over images;
the mean and std of the score per IoU bin; a 20 × 20 histogram of (IoU, score).

Calibration asks the other half: is a detection with score s a true positive with probability s? Detection expected
calibration error (Küppers et al., 2020) with equal-count score bins: ECE = Σ_b (n_b / N) |mean score_b −
precision_b|, precision = the fraction of COCOeval's true positives at that IoU among its evaluated, not ignored,
detections.

Inputs are the per-detection table of `dhanalysis.analysis.detections` (columns image_id, category_id, size, iou,
tp_50, … and the score fields); everything here is numpy, pandas and scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from dhanalysis.analysis.bootstrap import interval, replicate_counts
from dhanalysis.analysis.stats import pcc_from_moments
from dhanalysis.vocab import SIZE_GROUPS

NUM_BINS = 20  # IoU bins of width 0.05, as the sliding-window statistics
HIST_BINS = 20  # score bins of the 2-D histogram
CALIBRATION_BINS = 10
DEFAULT_REPLICATES = 100
CORRELATIONS = ("pearson", "spearman", "kendall")
ALIGNMENT_COLUMNS = ("score_field", "grouping", "group", "n", *(f"{c}{s}" for c in CORRELATIONS
                                                                for s in ("", "_lo", "_hi")))
BIN_COLUMNS = ("score_field", "size", "bin", "iou_lo", "iou_hi", "n", "score_mean", "score_std")
HIST_COLUMNS = ("score_field", "iou_bin", "score_bin", "iou_lo", "iou_hi", "score_lo", "score_hi", "count")
CALIBRATION_COLUMNS = ("iou", "bin", "n", "score_lo", "score_hi", "score_mean", "precision")


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
    out += [("class", str(name), (table["category"] == name).to_numpy()) for name in sorted(table["category"].unique())]
    return out


def _weighted_pearson(x: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(B,)`` Pearson's r of a resample in which item i appears ``w[b, i]`` times; x, s: (N,) or (B, N)."""
    return pcc_from_moments(w.sum(axis=1), (w * x).sum(axis=1), (w * x * x).sum(axis=1), (w * s).sum(axis=1),
                            (w * s * s).sum(axis=1), (w * x * s).sum(axis=1))


def _weighted_midranks(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(B, N)`` the average rank (scipy's ``rankdata``, 1-based, ties averaged) of each item within each resample
    where item i appears ``w[b, i]`` times: the weight of the smaller values plus (weight of its tie group + 1) / 2."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(v)]))
    tied = np.add.reduceat(w[:, order], starts, axis=1)  # (B, groups)
    below = np.cumsum(tied, axis=1) - tied
    ranks = np.empty_like(w)
    ranks[:, order] = (below + (tied + 1) / 2)[:, group]
    return ranks


def _tie_pairs(keys: list[np.ndarray], w: np.ndarray) -> np.ndarray:
    """``(B,)`` number of pairs of a resample tied in every one of ``keys`` (each (N,)): Σ_g T_g (T_g − 1) / 2 over
    the tie groups, T_g the group's weight."""
    order = np.lexsort(keys[::-1])
    stacked = np.stack([k[order] for k in keys])
    starts = np.flatnonzero(np.r_[True, (stacked[:, 1:] != stacked[:, :-1]).any(axis=0)])
    t = np.add.reduceat(w[:, order], starts, axis=1)
    return (t * (t - 1) / 2).sum(axis=1)


class KendallPlan:
    """Kendall's tau-b of many resamples of the same points, from weights: the weighted count of discordant pairs by
    bottom-up merge levels (Knight's algorithm), whose orderings depend on the points only and are built once.

    With the points sorted by (x, s), a pair is discordant exactly when the earlier one has the larger s; at each
    level every element of a block's right half adds the weight of its left half with larger s (a segmented cumulative
    sum read at precomputed positions). tau-b = (n0 − n1 − n2 + n3 − 2 D) / sqrt((n0 − n1)(n0 − n2)), as
    scipy.
    """

    def __init__(self, x: np.ndarray, s: np.ndarray):
        self.x, self.s = x, s
        self.order = np.lexsort((s, x))
        rank = np.unique(s[self.order], return_inverse=True)[1].astype(np.int64)
        top = int(rank.max(initial=0)) + 1
        n, width, self.levels = len(x), 1, []
        pos = np.arange(n)
        while width < n:
            block = pos // (2 * width)
            is_left = pos % (2 * width) < width
            left, right = pos[is_left], pos[~is_left]
            perm = left[np.lexsort((rank[left], block[left]))]
            keys = block[perm] * top + rank[perm]
            upto = np.searchsorted(keys, block[right] * top + rank[right], side="right")
            end = np.searchsorted(keys, block[right] * top + (top - 1), side="right")
            self.levels.append((perm, right, upto, end))
            width *= 2

    def tau_b(self, w: np.ndarray) -> np.ndarray:
        """``(B,)`` tau-b of each resample (item i appearing ``w[b, i]`` times; fewer than 2^24 items in all)."""
        # float32 is exact here (integer weights, partial sums below 2^24 points) and halves the memory traffic
        wo = w[:, self.order].astype(np.float32)
        discordant = np.zeros(len(w))
        zero = np.zeros((len(w), 1), dtype=np.float32)
        for perm, right, upto, end in self.levels:
            c = np.concatenate([zero, np.cumsum(wo[:, perm], axis=1)], axis=1)
            discordant += (wo[:, right] * (c[:, end] - c[:, upto])).sum(axis=1, dtype=np.float64)
        total = w.sum(axis=1)
        n0 = total * (total - 1) / 2
        n1, n2 = _tie_pairs([self.x], w), _tie_pairs([self.s], w)
        n3 = _tie_pairs([self.x, self.s], w)
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = (n0 - n1 - n2 + n3 - 2 * discordant) / np.sqrt((n0 - n1) * (n0 - n2))
        return np.clip(tau, -1.0, 1.0)


def _replicates(x: np.ndarray, s: np.ndarray, w: np.ndarray, plan: KendallPlan | None = None
                ) -> dict[str, np.ndarray]:
    """Each correlation of every resample ``w`` (B, N), exactly the statistic of the resampled arrays without building
    them: Pearson from weighted sums, Spearman from weighted mid-ranks, Kendall's tau-b from weighted pair counts
    (``plan``: `KendallPlan` of x, s, built once for many calls)."""
    if len(x) < 3:
        return {c: np.full(len(w), np.nan) for c in CORRELATIONS}
    xc, sc = x - x.mean(), s - s.mean()  # centred: the moments then lose no digits
    out = {"pearson": _weighted_pearson(xc, sc, w)}
    rx, rs = _weighted_midranks(x, w), _weighted_midranks(s, w)
    mean = (w.sum(axis=1, keepdims=True) + 1) / 2
    out["spearman"] = _weighted_pearson(rx - mean, rs - mean, w)
    out["kendall"] = (plan or KendallPlan(x, s)).tau_b(w)
    # the rule of `correlations`: a resample whose IoU or score is constant (up to rounding) has NaN
    present = w > 0
    spread = lambda v: np.where(present, v, -np.inf).max(axis=1) - np.where(present, v, np.inf).min(axis=1)  # noqa
    degenerate = (w.sum(axis=1) < 3) | (spread(x) < 1e-9) | (spread(s) < 1e-9)
    for c in CORRELATIONS:
        out[c][degenerate] = np.nan
    return out


def alignment_table(table: pd.DataFrame, score_fields: Sequence[str] = ("score",), iou: str = "iou",
                    replicates: int = DEFAULT_REPLICATES, seed: int = 0, chunk: int = 8) -> pd.DataFrame:
    """One row per (score field, grouping, group): n and each correlation of IoU and score with its 95% bootstrap
    interval over images (``replicates`` resamples of the images with replacement, each recomputing the statistic
    from every detection of the drawn images, ``chunk`` resamples at a time; 0: no intervals). Groups with fewer
    than 3 detections or a constant score or IoU get NaN."""
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
            draws = {c: [] for c in CORRELATIONS}
            plan = KendallPlan(x, s) if len(counts) and len(x) >= 3 else None
            for start in range(0, len(counts), chunk):
                for c, v in _replicates(x, s, counts[start:start + chunk][:, pos], plan).items():
                    draws[c].append(v)
            for c in CORRELATIONS:
                row[f"{c}_lo"], row[f"{c}_hi"] = interval(np.concatenate(draws[c])) if len(counts) else (np.nan,
                                                                                                          np.nan)
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


def calibration_table(table: pd.DataFrame, thresholds: Sequence[int] = (50, 75),
                      num_bins: int = CALIBRATION_BINS) -> tuple[pd.DataFrame, dict[str, float]]:
    """(reliability table: per IoU threshold and equal-count score bin, n, score range, mean score and precision;
    {"ece_50": …, "ece_75": …}). Detections COCOeval ignores or did not evaluate are left out."""
    rows, ece = [], {}
    for t in thresholds:
        keep = table[f"ignored_{t}"].eq(False).to_numpy() & table["evaluated"].to_numpy(bool)
        s = table["score"].to_numpy(np.float64)[keep]
        tp = table[f"tp_{t}"].to_numpy(bool)[keep]
        order = np.argsort(s, kind="stable")
        total, gap = len(s), 0.0
        for k, idx in enumerate(np.array_split(order, min(num_bins, max(total, 1)))):
            if len(idx) == 0:
                continue
            mean, precision = float(s[idx].mean()), float(tp[idx].mean())
            gap += len(idx) / total * abs(mean - precision)
            rows.append({"iou": t / 100, "bin": k, "n": len(idx), "score_lo": float(s[idx].min()),
                         "score_hi": float(s[idx].max()), "score_mean": mean, "precision": precision})
        ece[f"ece_{t}"] = gap if total else float("nan")
    return pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS)), ece

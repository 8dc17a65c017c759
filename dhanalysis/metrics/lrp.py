"""Localisation Recall Precision (LRP) and optimal LRP of any detector's results file (``dhanalysis detections``).

AP summarises a whole precision–recall curve; a deployed detector keeps the detections above one score threshold, and
what it then gets wrong is false positives, missed objects and loosely fitting boxes. LRP is one error in [0, 1] that
counts all three at a threshold, and oLRP is its value at the best threshold, with that threshold per class.

**Version**: the TPAMI definition (Oksuz, Cam, Kalkan, Akbas, "One Metric to Measure them All: Localisation Recall
Precision (LRP) for Evaluating Visual Detection Tasks", IEEE TPAMI 2022, arXiv 2011.10772; it revises "Localization
Recall Precision (LRP): A New Performance Metric for Object Detection", ECCV 2018, whose components were weighted
differently). For the detections kept at a threshold, matched to the ground truths at IoU τ,

    LRP = (Σ_TP (1 − IoU) / (1 − τ) + N_FP + N_FN) / (N_TP + N_FP + N_FN),    τ = 0.5,

0 for perfect detections, 1 for detecting nothing (or only false positives). Its components, at the optimum:
oLRP_loc = Σ_TP (1 − IoU) / N_TP (the mean localisation error of the true positives, not divided by 1 − τ),
oLRP_FP = N_FP / (N_TP + N_FP) = 1 − precision, oLRP_FN = N_FN / N_GT = 1 − recall.

**Matching**: COCOeval's at IoU τ (`dhanalysis.metrics.coco_match`, equal to pycocotools element for element):
greedy by score within each image and class, crowd and area rules of area "all", the 100 best detections per image and
class. A detection COCOeval ignores (matched to a crowd) is neither TP nor FP; the ground truths are its non-ignored
ones. Since the matching runs in score order, the detections with score >= s are matched exactly as if they were the
whole file, so every threshold's counts are cumulative sums along the score order.

**oLRP of a class** = the minimum of LRP over score thresholds s (detections with score >= s kept): every distinct
score of the class's detections, and keeping nothing (LRP 1). The LRP-optimal threshold is the lowest kept score at
the minimum; of equal LRP the highest threshold wins, keeping nothing counting as the highest, so a class that no
threshold takes below 1 reports oLRP 1, no threshold (NaN), oLRP_loc and oLRP_FP undefined (NaN) and oLRP_FN 1, the
authors' values. A class without a ground truth that counts is left out (NaN), as in the paper.
**moLRP** ("all") = the mean of oLRP over the classes with ground truth; each component's "all" is its mean over those
classes where it is defined (the authors' summarize()).

Where the authors' code differs: it evaluates LRP at every prefix of the score order, which can split detections of
equal score that no threshold separates; here only thresholds are candidates. The two agree when scores are distinct.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dhanalysis.metrics import coco_match

LRP_TAU = 0.5
ALL_ID, ALL = -1, "all"
LRP_COLUMNS = ("tau", "category_id", "category", "ground_truths", "detections", "olrp", "olrp_loc", "olrp_fp",
               "olrp_fn", "threshold", "tp", "fp", "fn")
SUMMARY_KEYS = ("olrp", "olrp_loc", "olrp_fp", "olrp_fn")  # moLRP and its components, as the summary names them


def lrp(tp: np.ndarray, fp: np.ndarray, loc: np.ndarray, ground_truths: np.ndarray,
        tau: float = LRP_TAU) -> np.ndarray:
    """LRP from counts (elementwise): ``loc`` = Σ_TP (1 − IoU); N_FN = ground truths − TP, so the denominator
    N_TP + N_FP + N_FN is FP + ground truths."""
    tp, fp, ground_truths = (np.asarray(v, np.float64) for v in (tp, fp, ground_truths))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.asarray(loc, np.float64) / (1.0 - tau) + fp + ground_truths - tp) / (fp + ground_truths)


def optimal_lrp(category: np.ndarray, score: np.ndarray, tp: np.ndarray, iou: np.ndarray, ground_truths: np.ndarray,
                tau: float = LRP_TAU) -> dict[str, np.ndarray]:
    """Per class (``ground_truths``: (K,) counts, ``category``: each detection's position in it): oLRP, its
    components, the LRP-optimal threshold and TP / FP / FN there, and the number of detections (module docstring).

    The detections are the counted ones (COCOeval's TPs and FPs at IoU ``tau``), ``iou`` their matched IoU. One sort by
    (class, falling score); each class's counts are cumulated along it and read at the last detection of each score.
    """
    k = len(ground_truths)
    ground_truths = np.asarray(ground_truths, np.int64)
    order = np.lexsort((-np.asarray(score, np.float64), category))
    cls, s, hit = np.asarray(category)[order], np.asarray(score, np.float64)[order], np.asarray(tp, bool)[order]
    loc = np.where(hit, 1.0 - np.asarray(iou, np.float64)[order], 0.0)
    n = len(cls)
    start = np.searchsorted(cls, cls, side="left")  # where each detection's class begins in the order
    tp_c, loc_c = np.cumsum(hit), np.cumsum(loc)
    tp_n = tp_c - np.r_[0, tp_c][start]  # within the class, up to and including this detection
    loc_n = loc_c - np.r_[0.0, loc_c][start]
    fp_n = np.arange(1, n + 1) - start - tp_n
    last = np.flatnonzero(np.r_[(cls[1:] != cls[:-1]) | (s[1:] != s[:-1]), True]) if n else np.zeros(0, np.int64)
    g = cls[last]
    value = lrp(tp_n[last], fp_n[last], loc_n[last], ground_truths[g], tau)
    out = {"detections": np.bincount(cls, minlength=k), "olrp": np.ones(k), "threshold": np.full(k, np.nan),
           "tp": np.zeros(k, np.int64), "fp": np.zeros(k, np.int64)}
    if len(last):
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])  # each class's first candidate (its highest score)
        best = np.repeat(np.minimum.reduceat(value, first), np.diff(np.r_[first, len(g)]))
        reach = np.flatnonzero(value == best)
        chosen = reach[np.r_[True, g[reach][1:] != g[reach][:-1]]]  # the highest threshold reaching the minimum
        chosen = chosen[value[chosen] < 1.0]  # at 1, keeping nothing does as well and is the higher threshold
        c, at = g[chosen], last[chosen]
        out["olrp"][c], out["threshold"][c] = value[chosen], s[at]
        out["tp"][c], out["fp"][c] = tp_n[at], fp_n[at]
        loc_best = np.zeros(k)
        loc_best[c] = loc_n[at]
    else:
        loc_best = np.zeros(k)
    has_gt = ground_truths > 0
    out["fn"] = ground_truths - out["tp"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["olrp_loc"] = np.where(out["tp"] > 0, loc_best / out["tp"], np.nan)
        out["olrp_fp"] = np.where(out["tp"] + out["fp"] > 0, out["fp"] / (out["tp"] + out["fp"]), np.nan)
        out["olrp_fn"] = out["fn"] / ground_truths
    for key in ("olrp", "olrp_loc", "olrp_fp", "olrp_fn", "threshold"):
        out[key] = np.where(has_gt, out[key], np.nan)  # left out: no ground truth that counts
    return out


def lrp_table(ev: coco_match.Evaluation, gt: coco_match.Boxes, dt: coco_match.Boxes, names: Mapping[int, str],
              tau: float = LRP_TAU) -> tuple[pd.DataFrame, dict[str, float]]:
    """(one row per class of ``ev`` and an "all" row (``category_id`` -1: moLRP), columns `LRP_COLUMNS`;
    {"olrp": moLRP, "olrp_loc", "olrp_fp", "olrp_fn"} for the summary). ``ev``: COCOeval's evaluation of ``dt`` on
    ``gt`` with ``tau`` among its IoU thresholds and area "all". "all"'s counts (ground truths, detections, TP, FP,
    FN) are sums over the classes with ground truth, each at its own optimum; its threshold is NaN."""
    o = coco_match.outcomes(ev, gt, dt, tau)
    per = optimal_lrp(o.category, o.score, o.tp, o.iou, o.positives, tau)
    cat_ids = [int(c) for c in ev.params.catIds]
    has_gt = o.positives > 0
    with np.errstate(invalid="ignore"):  # no class with ground truth: every mean is NaN
        overall = {key: float(np.nanmean(per[key][has_gt])) if np.isfinite(per[key][has_gt]).any() else float("nan")
                   for key in SUMMARY_KEYS}
    rows = {"tau": float(tau), "category_id": [ALL_ID, *cat_ids],
            "category": [ALL, *(names.get(c, str(c)) for c in cat_ids)],
            "ground_truths": np.r_[o.positives.sum(), o.positives],
            "detections": np.r_[per["detections"][has_gt].sum(), per["detections"]],
            **{key: np.r_[overall[key], per[key]] for key in SUMMARY_KEYS},
            "threshold": np.r_[np.nan, per["threshold"]],
            **{key: np.r_[per[key][has_gt].sum(), per[key]] for key in ("tp", "fp", "fn")}}
    return pd.DataFrame(rows)[list(LRP_COLUMNS)], overall

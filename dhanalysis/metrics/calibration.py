"""Is a detection with score s right with probability s? Calibration errors of any detector's detections, by the
definitions the field compares (``dhanalysis detections``).

A calibration error is only comparable between papers when its binning, its matching and its notion of "right" are the
same, so each measure here follows one published definition and its reference implementation:

- **D-ECE** (Küppers, Kronenberger, Shantia, Haselhoff, "Multivariate Confidence Calibration for Object Detection",
  CVPR Workshops 2020; confidence only): the detections of every class pooled and binned by score,
  D-ECE = Σ_b (n_b / N) |precision_b − mean score_b|, precision_b the fraction of the bin's detections that are true
  positives at IoU τ (0.5 and 0.75). Bins: 10 over [0, 1] of equal width by default, in the convention of netcal
  (the authors' library: ``netcal.metrics.ECE(bins=10, detection=True)``, which the tests equal): edges
  ``np.linspace(0, 1, 11)``, bin b holds edges[b] <= s < edges[b + 1], the last bin also s = 1, an empty bin weighs
  nothing. ``equal-count`` bins instead have the scores' quantiles as edges (numpy's linear interpolation; the first
  edge 0, the last 1: netcal's ``equal_intervals=False``); tied scores stay in one bin, so counts are equal up to ties.
  Scores are first clipped to [ε, 1 − ε] (ε = 2.2e-16), as netcal does, and the sums run in its order, so D-ECE and
  MCE are netcal's bit for bit (a score of exactly 0 counts as 2.2e-16: the bins are the same, the gap moves by
  an ulp).
- **MCE**: the largest |precision_b − mean score_b| over the non-empty bins of the same binning (netcal's MCE).
- **LaECE** (localisation-aware ECE: Oksuz, Joy, Dokania, "Towards Building Self-Aware Object Detectors via Reliable
  Uncertainty Quantification and Calibration", CVPR 2023; the LaECE_0 protocol of Kuzucu, Oksuz, Sadeghi, Dokania, "On
  Calibration of Object Detectors: Pitfalls, Evaluation and Baselines", ECCV 2024): a detection's target is the IoU
  with the ground truth it is matched to, 0 when it is a false positive, and each class is calibrated on its own:
  LaECE_c = Σ_j (n_j^c / N^c) |mean score_j^c − (1 / n_j^c) Σ_{i in bin j} IoU_i · tp_i| (equivalently precision times
  the mean IoU of the bin's true positives), LaECE = the mean of LaECE_c over the classes with a ground truth that
  counts and at least one counted detection. As in the authors' code (fiveai/detection_calibration): 25 bins of equal
  width, bin 0 = [0, 1/25] and bin j = (j/25, (j + 1)/25] after it; TP validation threshold τ = 0 (LaECE_0: COCOeval's
  rule IoU >= τ, so a detection can take a free ground truth it does not overlap, with target 0); detections of a
  class without ground truth are left out. (SAOD, CVPR 2023, validated TPs at IoU 0.1; the ECCV 2024 protocol lowered
  it to 0.) The authors' code also drops a class whose LaECE_c is exactly 0; here it counts.

**Matching** for every measure is COCOeval's (`dhanalysis.metrics.coco_match`): greedy by score within each image and
class, crowd and area rules of area "all", the 100 best detections per image and class. The detections measured are
those COCOeval counts (evaluated, not ignored: a detection matched to a crowd is neither right nor wrong).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dhanalysis.metrics import coco_match
from dhanalysis.errors import DHError

EQUAL_WIDTH, EQUAL_COUNT = "equal-width", "equal-count"
BINNINGS = (EQUAL_WIDTH, EQUAL_COUNT)
DECE, LAECE = "D-ECE", "LaECE"
DECE_BINS = 10  # Küppers et al. and netcal's default
DECE_IOUS = (0.5, 0.75)
LAECE_BINS = 25  # the authors' evaluation
LAECE_IOU = 0.0  # LaECE_0 (ECCV 2024)
ALL_ID, ALL = -1, "all"
CALIBRATION_COLUMNS = ("measure", "binning", "iou", "category_id", "category", "bin", "bin_lo", "bin_hi", "n",
                       "weight", "score_mean", "accuracy", "gap")

PROTOCOL = {
    "d_ece": f"Küppers et al. 2020 (confidence only), every class pooled: Σ_b n_b/N |precision_b − mean score_b|, "
             f"{DECE_BINS} score bins (equal-width by default: netcal's edges [lo, hi), the last closed), "
             f"TP = COCOeval's match at IoU 0.5 / 0.75; mce: the largest bin gap",
    "laece": f"LaECE_0 (Kuzucu et al. ECCV 2024; Oksuz et al. CVPR 2023): per class Σ_j n_j/N |mean score_j − mean of "
             f"IoU × TP_j|, {LAECE_BINS} equal-width bins ([0, 1/{LAECE_BINS}], then (lo, hi]), TP = COCOeval's match "
             f"at IoU >= {LAECE_IOU}, mean over classes with ground truth and detections",
}


def check_binning(binning: str) -> str:
    """``binning`` if it is one of `BINNINGS`, else a one-line `DHError`."""
    if binning not in BINNINGS:
        raise DHError(f"calibration binning {binning!r} is not one of {', '.join(BINNINGS)}")
    return binning


def bin_edges(score: np.ndarray, num_bins: int, binning: str = EQUAL_WIDTH) -> np.ndarray:
    """(num_bins + 1,) edges over [0, 1]: equal width (``np.linspace``, as netcal), or the quantiles of ``score``
    with the first edge 0 and the last 1 (equal count)."""
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    if check_binning(binning) == EQUAL_COUNT and len(score):
        edges = np.quantile(np.asarray(score, np.float64), edges)
        edges[0], edges[-1] = 0.0, 1.0
    return edges


def bin_index(score: np.ndarray, edges: np.ndarray, right_closed: bool = False) -> np.ndarray:
    """Each score's bin: [lo, hi) with the last bin closed (netcal, D-ECE), or (lo, hi] with the first closed
    (``right_closed``, the LaECE authors')."""
    found = np.searchsorted(edges, score, side="left" if right_closed else "right") - 1
    return np.clip(found, 0, len(edges) - 2)


def binned(score: np.ndarray, target: np.ndarray, group: np.ndarray, num_groups: int, bins: np.ndarray,
           num_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean score, mean target), each (groups, bins); means 0 in an empty bin (netcal's fill, so it adds no gap).
    One histogram of (group, bin) cells; sums are accumulated in input order."""
    cell = np.asarray(group, np.int64) * num_bins + bins
    size = num_groups * num_bins
    n = np.bincount(cell, minlength=size).reshape(num_groups, num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score, mean_target = (np.bincount(cell, weights=v, minlength=size).reshape(num_groups, num_bins) / n
                                   for v in (np.asarray(score, np.float64), np.asarray(target, np.float64)))
    return n, np.nan_to_num(mean_score), np.nan_to_num(mean_target)


def expected_error(n: np.ndarray, mean_score: np.ndarray, mean_target: np.ndarray) -> np.ndarray:
    """Per group (rows): Σ_b (n_b / N) |target_b − score_b| (NaN for a group without detections), in netcal's
    operations (the gap times the bin's share, summed over every bin, the empty ones adding 0)."""
    total = n.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(np.abs(mean_target - mean_score) * (n / total), axis=1)


def detection_ece(score: np.ndarray, tp: np.ndarray, num_bins: int = DECE_BINS,
                  binning: str = EQUAL_WIDTH) -> tuple[float, float, dict[str, np.ndarray]]:
    """(D-ECE, MCE, the bins: edges and n, mean score, precision per bin) of detections with these scores and
    true-positive flags, every detection one pool (module docstring). NaN, NaN without detections."""
    eps = np.finfo(np.float64).eps
    score = np.clip(np.asarray(score, np.float64), eps, 1.0 - eps)  # netcal's first step
    edges = bin_edges(score, num_bins, binning)
    b = bin_index(score, edges)
    n, mean_score, precision = binned(score, tp, np.zeros(len(b), np.int64), 1, b, num_bins)
    ece = float(expected_error(n, mean_score, precision)[0]) if len(b) else float("nan")
    mce = float(np.max(np.abs(precision - mean_score))) if len(b) else float("nan")
    return ece, mce, {"edges": edges, "n": n[0], "score_mean": mean_score[0], "accuracy": precision[0]}


def localisation_aware_ece(category: np.ndarray, score: np.ndarray, target: np.ndarray, ground_truths: np.ndarray,
                           num_bins: int = LAECE_BINS) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
    """(LaECE, LaECE_c per class (NaN where left out), the bins: n, mean score, mean target per class and bin).

    ``category``: each detection's class position (``ground_truths`` has one count per class); ``target``: its IoU
    with the matched ground truth, 0 for a false positive. Equal-width bins, right-closed (module docstring)."""
    k = len(ground_truths)
    edges = bin_edges(score, num_bins, EQUAL_WIDTH)
    b = bin_index(np.asarray(score, np.float64), edges, right_closed=True)
    n, mean_score, mean_target = binned(score, target, category, k, b, num_bins)
    per_class = expected_error(n, mean_score, mean_target)
    used = (np.asarray(ground_truths) > 0) & (n.sum(axis=1) > 0)
    per_class = np.where(used, per_class, np.nan)
    value = float(per_class[used].mean()) if used.any() else float("nan")
    return value, per_class, {"edges": edges, "n": n, "score_mean": mean_score, "accuracy": mean_target, "used": used}


def _rows(measure: str, binning: str, iou: float, ids: np.ndarray, labels: np.ndarray, bins: dict) -> pd.DataFrame:
    """The non-empty bins of each group as table rows."""
    n = np.atleast_2d(bins["n"])
    g, j = np.nonzero(n > 0)
    share = n / np.maximum(n.sum(axis=1, keepdims=True), 1)
    score, acc = np.atleast_2d(bins["score_mean"])[g, j], np.atleast_2d(bins["accuracy"])[g, j]
    return pd.DataFrame({"measure": measure, "binning": binning, "iou": float(iou), "category_id": ids[g],
                         "category": labels[g], "bin": j, "bin_lo": bins["edges"][j], "bin_hi": bins["edges"][j + 1],
                         "n": n[g, j], "weight": share[g, j], "score_mean": score, "accuracy": acc,
                         "gap": np.abs(acc - score)})


def calibration_table(ev: coco_match.Evaluation, laece_ev: coco_match.Evaluation, gt: coco_match.Boxes,
                      dt: coco_match.Boxes, names: Mapping[int, str], binning: str = EQUAL_WIDTH,
                      ious: Sequence[float] = DECE_IOUS, laece_iou: float = LAECE_IOU,
                      ) -> tuple[pd.DataFrame, dict[str, float]]:
    """(the reliability table: one row per non-empty bin, `CALIBRATION_COLUMNS` — D-ECE's bins at each IoU of
    ``ious`` over every class ("all"), LaECE's per class; {"ece_50", "mce_50", "ece_75", "mce_75", "laece"}).

    ``ev``: COCOeval's evaluation of ``dt`` on ``gt`` with ``ious`` among its thresholds; ``laece_ev``: the same with
    ``laece_iou`` (both area "all"). ``accuracy`` is precision for D-ECE and the mean of IoU × TP for LaECE; ``weight``
    is n over the group's detections; ``binning`` is D-ECE's and MCE's (LaECE's is always equal-width)."""
    check_binning(binning)
    frames, summary = [], {}
    one = (np.array([ALL_ID]), np.array([ALL], dtype=object))
    for iou in ious:
        o = coco_match.outcomes(ev, gt, dt, iou)
        ece, mce, bins = detection_ece(o.score, o.tp, DECE_BINS, binning)
        key = int(round(iou * 100))
        summary[f"ece_{key}"], summary[f"mce_{key}"] = ece, mce
        frames.append(_rows(DECE, binning, iou, *one, bins))
    o = coco_match.outcomes(laece_ev, gt, dt, laece_iou)
    counted = o.positives[o.category] > 0  # detections of a class without objects are left out
    summary["laece"], _, bins = localisation_aware_ece(o.category[counted], o.score[counted],
                                                       np.where(o.tp, o.iou, 0.0)[counted], o.positives, LAECE_BINS)
    cat_ids = np.asarray(laece_ev.params.catIds, np.int64)
    labels = np.array([names.get(int(c), str(c)) for c in cat_ids], dtype=object)
    frames.append(_rows(LAECE, EQUAL_WIDTH, laece_iou, cat_ids, labels, bins))
    table = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)[list(CALIBRATION_COLUMNS)]
    return table, summary

"""The numbers users of a results file expect beside AP: COCO's average recall, precision / recall / F1 at a score
threshold (with the F1-optimal threshold and the F1-vs-threshold curve), and a confusion matrix (``dhanalysis
detections``).

AP averages over every score threshold; a deployed detector keeps the detections above one. These tables answer
"what does it find, and how often is it wrong, at the threshold I ship?" and "which class does it mistake for which?".

- **Average recall** is COCOeval's summarize(): ``stats[6:12]`` (AR@1, AR@10, AR@100 over area "all", AR@100 for
  small / medium / large) from the recall array of the evaluation `dhanalysis.metrics.coco_match` already ran, the
  mean over IoU 0.50:0.95 and over the classes with ground truth; per class, the mean over the IoU thresholds.
- **Threshold metrics** reuse COCOeval's matching (greedy by score; crowd and area rules; area "all"; the 100 best
  detections per image and class) at IoU 0.5 and 0.75. Since COCOeval matches in score order, the detections with
  score >= s form a prefix of that order and are matched exactly as if they were the whole file: thresholding the
  matching is running COCOeval on the thresholded file. A counted detection is one COCOeval evaluated and did not
  ignore (a detection matched to a crowd is neither right nor wrong); a true positive is a counted, matched one;
  the ground truths are COCOeval's non-ignored ones (non-crowd). Precision = TP / (TP + FP), NaN without counted
  detections; recall = TP / ground truths, NaN without ground truths; F1 = 2 TP / (2 TP + FP + FN), their harmonic
  mean where both exist and 0 where only one does (that one is then 0). "all" pools the counts of every class
  (micro average), so one threshold serves every class. The F1-optimal threshold is searched over every distinct
  score of the counted detections (F1 changes only there); of equal F1 the highest threshold is kept.
- **Confusion matrix**: ultralytics' convention (``ConfusionMatrix.process_batch`` for detection, ultralytics 8.x,
  the YOLOv5 matrix before it); see `confusion_matrix` for the exact counting and where it departs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dhanalysis.metrics import coco_match
from dhanalysis.errors import DHError
from dhanalysis.vocab import (DETECTIONS_CONFUSION_CSV, DETECTIONS_F1_CURVE_CSV, DETECTIONS_RECALL_CSV,
                              DETECTIONS_THRESHOLDS_CSV)

DEFAULT_SCORE_THRESHOLD = 0.5  # detectron2's demo keeps detections from 0.5 (ultralytics' predictor from 0.25)
DEFAULT_CONFUSION_IOU = 0.5
THRESHOLD_IOUS = (0.5, 0.75)
CURVE_THRESHOLDS = np.arange(101) / 100  # 0.00, 0.01, ..., 1.00, each the double nearest its decimal, as json scores
COCO_IOUS = np.linspace(0.5, 0.95, 10)
ALL_ID, ALL = -1, "all"
BACKGROUND_ID, BACKGROUND = -1, "background"
AR_METRICS = {"AR1": ("all", 1), "AR10": ("all", 10), "AR100": ("all", 100), "ARs": ("small", 100),
              "ARm": ("medium", 100), "ARl": ("large", 100)}  # summarize()'s stats[6:12], in its order

RECALL_COLUMNS = ("category_id", "category", "area", "max_dets", "AR")
THRESHOLD_COLUMNS = ("iou", "category_id", "category", "threshold", "score_threshold", "tp", "fp", "fn",
                     "ground_truths", "precision", "recall", "f1")
CURVE_COLUMNS = ("iou", "category_id", "category", "score_threshold", "tp", "fp", "fn", "precision", "recall", "f1")
CONFUSION_COLUMNS = ("iou_threshold", "score_threshold", "true_id", "true", "predicted_id", "predicted", "count")

PROTOCOL = {
    "average_recall": "COCOeval summarize() stats[6:12]: recall at IoU 0.50:0.95, mean over classes with ground truth",
    "threshold_metrics": "COCOeval's matching (greedy by score, crowd and area rules), area 'all', 100 detections per "
                         "image and class; detections with score >= the threshold; ignored ones (matched to a crowd) "
                         "count neither way; 'all' pools every class's counts",
    "confusion": "ultralytics' ConfusionMatrix for detection: per image, class-agnostic IoU > the threshold, each "
                 "detection keeps its best ground truth, then each ground truth its best detection; crowds left out; "
                 "detections with score >= the threshold",
}


# ---------------------------------------------------------------------------------------------------- average recall
def _standard_thresholds(ev: coco_match.Evaluation) -> np.ndarray:
    """Which of the evaluation's IoU thresholds are COCO's 0.50:0.95 (all of them when those are not all present, as
    `dhanalysis.metrics.detections.ap_metrics` reads them): an extra threshold such as 0.1 stays out of AR."""
    thr = np.asarray(ev.params.iouThrs, np.float64)
    if all(np.isclose(thr, t).any() for t in COCO_IOUS):
        return np.array([np.isclose(COCO_IOUS, t).any() for t in thr])
    return np.ones(len(thr), bool)


def average_recall(ev: coco_match.Evaluation, names: Mapping[int, str]) -> pd.DataFrame:
    """AR of every (area range, max detections) of the evaluation, overall (``category_id`` -1, "all") and per class.

    "all" is summarize()'s number: the mean of the recall array's (IoU, class) entries that exist (a class without
    ground truth under that area range has none); so AR1, AR10, AR100, ARs, ARm, ARl are pycocotools' ``stats[6:12]``.
    A class without ground truth under an area range has AR NaN there.
    """
    p = ev.params
    recall = ev.eval["recall"][_standard_thresholds(ev)]  # (T, K, A, M)
    rows = []
    for a, area in enumerate(p.areaRngLbl):
        for m, max_dets in enumerate(p.maxDets):
            r = recall[:, :, a, m]
            valid = r[r > -1]  # summarize()'s own selection and order, so its mean is bit for bit the same
            rows.append((ALL_ID, ALL, area, int(max_dets), float(np.mean(valid)) if valid.size else float("nan")))
            per_class = np.where(r > -1, r, np.nan)
            with np.errstate(invalid="ignore"):
                means = per_class.mean(axis=0)
            rows += [(int(c), names.get(int(c), str(c)), area, int(max_dets), float(v))
                     for c, v in zip(p.catIds, means)]
    return pd.DataFrame(rows, columns=list(RECALL_COLUMNS))


def recall_summary(table: pd.DataFrame) -> dict[str, float]:
    """AR1, AR10, AR100, ARs, ARm, ARl (pycocotools' ``stats[6:12]``) from `average_recall`'s table, where its area
    ranges and max detections hold them."""
    overall = table[table["category_id"] == ALL_ID].set_index(["area", "max_dets"])["AR"]
    return {name: float(overall[key]) for name, key in AR_METRICS.items() if key in overall.index}


# ---------------------------------------------------------------------------------------------------- thresholds
def _by_falling_score(ev: coco_match.Evaluation, dt: coco_match.Boxes) -> np.ndarray:
    """The evaluated detections by falling score, ties in file order: COCOeval's matching order, sorted once for
    every IoU threshold and class (a stable sort by class keeps it within each class)."""
    rows = np.flatnonzero(ev.evaluated)
    return rows[np.argsort(-dt.score[rows], kind="stable")]


def _counted(ev: coco_match.Evaluation, gt: coco_match.Boxes, dt: coco_match.Boxes, iou: float,
             order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval's outcome at one IoU threshold, area "all": per counted detection (evaluated, not ignored), in the
    order of ``order``, its class position, score and whether it is a true positive; per class the number of ground
    truths that count."""
    p = ev.params
    a = coco_match.area_index(p)
    t = int(np.flatnonzero(np.isclose(np.asarray(p.iouThrs, np.float64), iou))[0])
    cat_ids = np.asarray(p.catIds, np.int64)
    rows = order[~ev.dt_ignore[a, t][order]]
    g_keep = (~coco_match.ground_truth_ignored(gt, tuple(p.areaRng[a])) & np.isin(gt.category, cat_ids)
              & np.isin(gt.image, np.asarray(p.imgIds, np.int64)))
    positives = np.bincount(np.searchsorted(cat_ids, gt.category[g_keep]), minlength=len(cat_ids))
    return np.searchsorted(cat_ids, dt.category[rows]), dt.score[rows], ev.dt_match[a, t][rows] > 0, positives


def _counts_above(score: np.ndarray, group: np.ndarray, positive: np.ndarray, num_groups: int,
                  thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TP, FP), each (groups, thresholds): how many positive and other detections of each group have score >= each
    threshold (``thresholds`` ascending). One histogram of how many thresholds each detection passes, summed from the
    top, instead of a pass over the detections per threshold."""
    g = len(thresholds)
    passes = np.searchsorted(thresholds, score, side="right")  # the detection passes thresholds[:passes]
    out = []
    for flag in (positive, ~positive):
        hist = np.bincount(group[flag] * (g + 1) + passes[flag], minlength=num_groups * (g + 1))
        out.append(np.cumsum(hist.reshape(num_groups, g + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:])
    return out[0], out[1]


def _rates(tp: np.ndarray, fp: np.ndarray, positives: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and FN from counts (see the module's docstring for the undefined cases)."""
    tp, fp = np.asarray(tp, np.float64), np.asarray(fp, np.float64)
    positives = np.broadcast_to(np.asarray(positives, np.float64), tp.shape)
    fn = positives - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"fn": fn.astype(np.int64), "precision": tp / (tp + fp), "recall": tp / positives,
                "f1": 2 * tp / (2 * tp + fp + fn)}


def _best_f1(score: np.ndarray, group: np.ndarray, positive: np.ndarray, positives: np.ndarray,
             num_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group, the score threshold of highest F1 among the distinct scores of its detections (of equal F1, the
    highest threshold), with its TP and FP; NaN / 0 for a group without detections. The detections come sorted by
    group, then by falling score; counts are cumulated within each group and F1 read at the last detection of each
    score, so every group is searched in one pass without another sort."""
    n = len(score)
    threshold = np.full(num_groups, np.nan)
    tp_best, fp_best = np.zeros(num_groups, np.int64), np.zeros(num_groups, np.int64)
    if n == 0:
        return threshold, tp_best, fp_best
    new_group = np.r_[True, group[1:] != group[:-1]]
    run_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    tp_all = np.cumsum(positive)
    tp = tp_all - (tp_all - positive)[run_start]  # within the group, up to and including this detection
    fp = (np.arange(n) - run_start + 1) - tp
    last = np.flatnonzero(np.r_[new_group[1:] | (score[1:] != score[:-1]), True])  # each score's last detection
    g = group[last]
    f1 = 2 * tp[last] / (tp[last] + fp[last] + positives[g])
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])  # each group's first candidate
    top = np.repeat(np.maximum.reduceat(f1, first), np.diff(np.r_[first, len(g)]))
    reach = np.flatnonzero(f1 == top)  # equal rationals divide to equal doubles: ties are exact
    chosen = last[reach[np.r_[True, g[reach][1:] != g[reach][:-1]]]]  # the highest score reaching it, per group
    groups = group[chosen]
    threshold[groups], tp_best[groups], fp_best[groups] = score[chosen], tp[chosen], fp[chosen]
    return threshold, tp_best, fp_best


def threshold_tables(ev: coco_match.Evaluation, gt: coco_match.Boxes, dt: coco_match.Boxes,
                     names: Mapping[int, str], score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                     ious: Sequence[float] = THRESHOLD_IOUS,
                     curve_thresholds: np.ndarray = CURVE_THRESHOLDS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(point table, curve): precision, recall and F1 overall ("all", pooled) and per class at each IoU of ``ious``
    (evaluated by ``ev``), at ``score_threshold`` (``threshold`` "fixed") and at the F1-optimal threshold ("best_f1");
    and the F1-vs-threshold curve on ``curve_thresholds``. ``ev`` is COCOeval's evaluation of ``dt`` on ``gt``."""
    cat_ids = [int(c) for c in ev.params.catIds]
    k = len(cat_ids)
    ids = np.array([ALL_ID, *cat_ids], np.int64)
    labels = np.array([ALL, *(names.get(c, str(c)) for c in cat_ids)], dtype=object)
    curve_thresholds = np.asarray(curve_thresholds, np.float64)
    order = _by_falling_score(ev, dt)
    points, curves = [], []
    for iou in ious:
        cls, score, tp_flag, per_class = _counted(ev, gt, dt, iou, order)
        positives = np.r_[per_class.sum(), per_class]  # row 0 pools every class
        counts = {}
        for name, thresholds in (("fixed", np.array([float(score_threshold)])), ("curve", curve_thresholds)):
            tp, fp = _counts_above(score, cls, tp_flag, k, thresholds)
            counts[name] = np.r_[tp.sum(axis=0, keepdims=True), tp], np.r_[fp.sum(axis=0, keepdims=True), fp]
        pooled = _best_f1(score, np.zeros(len(cls), np.int64), tp_flag, positives[:1], 1)
        by_class = np.argsort(cls, kind="stable")  # falling score within each class, kept
        each = _best_f1(score[by_class], cls[by_class], tp_flag[by_class], per_class, k)
        best, tp_b, fp_b = (np.r_[a, b] for a, b in zip(pooled, each))
        tp, fp = counts["fixed"]
        for kind, thr, t_, f_ in (("fixed", np.full(k + 1, float(score_threshold)), tp[:, 0], fp[:, 0]),
                                  ("best_f1", best, tp_b, fp_b)):
            points.append(pd.DataFrame({"iou": iou, "category_id": ids, "category": labels, "threshold": kind,
                                        "score_threshold": thr, "tp": t_, "fp": f_, **_rates(t_, f_, positives),
                                        "ground_truths": positives}))
        tp, fp = counts["curve"]
        g = len(curve_thresholds)
        rates = _rates(tp, fp, positives[:, None])
        curves.append(pd.DataFrame({"iou": iou, "category_id": np.repeat(ids, g), "category": np.repeat(labels, g),
                                    "score_threshold": np.tile(curve_thresholds, k + 1), "tp": tp.ravel(),
                                    "fp": fp.ravel(), **{key: v.ravel() for key, v in rates.items()}}))
    # per IoU and class, the fixed threshold's row then the optimum's (a stable sort keeps the order they were built in)
    point = pd.concat(points, ignore_index=True).sort_values(["iou", "category_id"], kind="stable")
    return (point[list(THRESHOLD_COLUMNS)].reset_index(drop=True),
            pd.concat(curves, ignore_index=True)[list(CURVE_COLUMNS)])


# ---------------------------------------------------------------------------------------------------- confusion
def _same_image_pairs(det_image: np.ndarray, gt_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) of the same image, as positions into the two arrays, detections in order and,
    within one, ground truths in order."""
    g_order = np.argsort(gt_image, kind="stable")
    g_sorted = gt_image[g_order]
    lo = np.searchsorted(g_sorted, det_image, side="left")
    counts = np.searchsorted(g_sorted, det_image, side="right") - lo
    pair_det = np.repeat(np.arange(len(det_image)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return pair_det, g_order[np.repeat(lo, counts) + offsets]


def _first_of_each(key: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The first position of ``order`` for each value of ``key[order]`` (``order`` sorts by ``key`` first)."""
    k = key[order]
    return order[np.r_[True, k[1:] != k[:-1]]] if len(order) else order


def confusion_matrix(gt: coco_match.Boxes, dt: coco_match.Boxes, cat_ids: Sequence[int], names: Mapping[int, str],
                     iou_threshold: float = DEFAULT_CONFUSION_IOU,
                     score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> pd.DataFrame:
    """Classes × classes plus background, counted as ultralytics' detection ``ConfusionMatrix`` counts it.

    Per image: the detections with score >= ``score_threshold`` and the non-crowd ground truths of the classes
    ``cat_ids``. Candidate pairs are every (detection, ground truth) with IoU > ``iou_threshold`` whatever their classes
    (IoU as COCOeval computes it for boxes). Each detection keeps only its highest-IoU candidate; then each ground
    truth keeps only its highest-IoU detection among those left: a one-to-one matching of mutual best pairs (not a
    greedy assignment — a detection that loses its best ground truth is not offered its second). Then:

    - a matched ground truth of class t adds 1 to (true t, predicted = the detection's class): the diagonal when the
      classes agree, a confusion otherwise;
    - an unmatched ground truth of class t adds 1 to (true t, predicted background): a miss;
    - an unmatched detection of class p adds 1 to (true background, predicted p): a false positive on background
      (this includes a duplicate of an object another detection took).

    Where ultralytics leaves it open or differs: ties of IoU go to the earlier ground truth, then the earlier detection,
    of the files (ultralytics' unstable sort leaves them arbitrary); a detection is kept at score >= the threshold
    (ultralytics: >), so one threshold means the same detections as in the threshold metrics; crowd annotations are
    left out as ultralytics' COCO labels leave them out, so a detection on a crowd region is a false positive; every
    detection of the file takes part (ultralytics caps each image at 300 during NMS, before its matrix).

    Returns one row per cell, ``true_id`` / ``predicted_id`` = the category id or -1 for background (the
    (background, background) cell does not exist), with the two thresholds as columns.
    """
    cat_ids = [int(c) for c in sorted(set(int(c) for c in cat_ids))]
    k = len(cat_ids)
    cats = np.asarray(cat_ids, np.int64)
    g = np.flatnonzero(~gt.crowd & np.isin(gt.category, cats))
    d = np.flatnonzero(dt.score >= score_threshold)
    pair_d, pair_g = _same_image_pairs(dt.image[d], gt.image[g])
    iou = coco_match.box_iou(dt.xywh[d[pair_d]], gt.xywh[g[pair_g]], np.zeros(len(pair_d), bool))
    near = iou > iou_threshold
    pair_d, pair_g, iou = pair_d[near], pair_g[near], iou[near]
    best_gt = _first_of_each(pair_d, np.lexsort((pair_g, -iou, pair_d)))  # each detection's best ground truth
    pair_d, pair_g, iou = pair_d[best_gt], pair_g[best_gt], iou[best_gt]
    best_det = _first_of_each(pair_g, np.lexsort((pair_d, -iou, pair_g)))  # each ground truth's best detection
    matched_d, matched_g = pair_d[best_det], pair_g[best_det]

    true_cls = np.searchsorted(cats, gt.category[g])
    det_cls = np.searchsorted(cats, dt.category[d])
    predicted = np.full(len(g), k)  # background: missed
    predicted[matched_g] = det_cls[matched_d]
    unmatched = np.ones(len(d), bool)
    unmatched[matched_d] = False
    cell = np.r_[true_cls * (k + 1) + predicted, k * (k + 1) + det_cls[unmatched]]
    counts = np.bincount(cell, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)  # [true, predicted]

    ids = np.array([*cat_ids, BACKGROUND_ID], np.int64)
    labels = np.array([*(names.get(c, str(c)) for c in cat_ids), BACKGROUND], dtype=object)
    t_pos, p_pos = np.divmod(np.arange((k + 1) ** 2), k + 1)
    keep = ~((t_pos == k) & (p_pos == k))
    t_pos, p_pos = t_pos[keep], p_pos[keep]
    return pd.DataFrame({"iou_threshold": float(iou_threshold), "score_threshold": float(score_threshold),
                         "true_id": ids[t_pos], "true": labels[t_pos], "predicted_id": ids[p_pos],
                         "predicted": labels[p_pos], "count": counts[t_pos, p_pos]})[list(CONFUSION_COLUMNS)]


# ---------------------------------------------------------------------------------------------------- all of them
def metric_tables(ev: coco_match.Evaluation, gt: coco_match.Boxes, dt: coco_match.Boxes, names: Mapping[int, str],
                  score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                  confusion_iou: float = DEFAULT_CONFUSION_IOU) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Every table of this module keyed by the file `dhanalysis detections` writes it to, and AR1 … ARl for the
    summary. ``ev``: COCOeval's evaluation of ``dt`` on ``gt`` with IoU 0.50:0.95 (extra thresholds allowed), the four
    area ranges and max detections 1 / 10 / 100, as the analysis runs it once for AP."""
    recall = average_recall(ev, names)
    point, curve = threshold_tables(ev, gt, dt, names, score_threshold)
    tables = {DETECTIONS_RECALL_CSV: recall, DETECTIONS_THRESHOLDS_CSV: point, DETECTIONS_F1_CURVE_CSV: curve,
              DETECTIONS_CONFUSION_CSV: confusion_matrix(gt, dt, ev.params.catIds, names, confusion_iou,
                                                         score_threshold)}
    return tables, recall_summary(recall)


def check_thresholds(score_threshold: float, confusion_iou: float) -> None:
    """Both thresholds in [0, 1]: a score outside never selects a meaningful set, an IoU outside matches all or none."""
    for name, value in (("score_threshold", score_threshold), ("confusion_iou", confusion_iou)):
        if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
            raise DHError(f"{name} must be a number in [0, 1], got {value!r}")

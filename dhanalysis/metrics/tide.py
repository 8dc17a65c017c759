"""TIDE's error breakdown (Bolya et al., ECCV 2020) of one COCO results file, by TIDE's own definitions.

TIDE explains the AP a detector loses at one IoU (0.5) by six error types, each fixed by its own oracle, and
reports the AP gained by each fix (ΔAP, AP points) — the numbers `tidecv` prints. The definitions, as `tidecv` 1.0.1
applies them (the tests run both on the same files and compare every ΔAP):

- **Matching** (per image): the image's detections sorted by score (stable), the first 100 kept *over all classes*;
  each in turn takes the not-yet-taken same-class ground truth of largest IoU when that IoU is ≥ 0.5 (a true
  positive). An unmatched detection whose crowd-IoU (intersection over its own area) with a same-class crowd box is
  > 0.5 is ignored. Crowd boxes are the only ignored ground truths (no area ranges).
- **Errors** of each unmatched or ignored detection, tested in this order: *Loc* (its same-class IoU, max over
  all same-class boxes, in [0.1, 0.5]), *Cls* (IoU ≥ 0.5 with a box of another class), *Dupe* (IoU ≥ 0.5 with a
  same-class box already taken), *Bkg* (IoU ≤ 0.1 with every box, or an image without boxes), else *Both*. A
  ground truth that no detection takes and no Loc / Cls error points at is *Miss*.
- **Fixes**: Loc and Cls errors become true positives (Cls in the box's class), at most one per box — the first
  (highest-scoring) error pointing at a box nobody took — the others are removed; fixing Dupe, Bkg or Both removes
  those detections; fixing Miss removes those boxes from the positives. ΔAP = AP(fixed) − AP, floored at 0.
- **False positives / negatives**: every true positive scored 1 and every false positive 0 (FalsePos); every
  unmatched box removed from the positives (FalseNeg). These two are not floored.
- **AP**: per class, COCO's 101-point interpolated precision; the mean over every class with a ground truth *or a
  detection* (a class detected but absent from the ground truth counts with AP 0, unlike COCOeval).

The matching is TIDE's, not COCOeval's (COCOeval keeps 100 detections per image *and class*, uses area ranges and
a crowd-IoU ≥ 0.5); `dhanalysis.metrics.detections` reports both side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

POS_THRESHOLD = 0.5
BACKGROUND_THRESHOLD = 0.1
MAX_DETS = 100  # per image, over all classes (TIDE's COCO default)
MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")  # TIDE's order
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
TP, FP, IGNORED, DROPPED = "tp", "fp", "ignored", "dropped"  # a detection's status in TIDE's matching
TIDE_COLUMNS = ("error", "kind", "delta_ap", "count")
# TIDE reads the curve at k / 100 exactly (COCOeval's np.linspace differs in the last bit at some k, which moves a
# recall that lands on a grid point)
RECALL_POINTS = np.arange(101) / 100

_ERROR_CODE = {name: i for i, name in enumerate(MAIN_ERRORS)}


@dataclass
class TideMatch:
    """TIDE's matching and error types of every detection and ground truth, as flat arrays.

    Detections keep the order TIDE visits them (image by image in the ground truth's image order, each image by
    descending score); ``det_index`` maps back to the results file. Errors point at a ground truth by position.
    """

    det_index: np.ndarray  # (D,) row of the results table
    det_class: np.ndarray  # (D,)
    det_score: np.ndarray  # (D,)
    status: np.ndarray  # (D,) TP / FP / IGNORED
    error: np.ndarray  # (D,) index into MAIN_ERRORS, -1 for true positives
    fix_class: np.ndarray  # (D,) the class a fixed Loc / Cls error is counted in
    fixable: np.ndarray  # (D,) bool: this Loc / Cls error becomes a true positive when fixed
    gt_class: np.ndarray  # (G,) non-crowd ground truths
    gt_used: np.ndarray  # (G,) bool: matched
    gt_missed: np.ndarray  # (G,) bool: a Miss error
    dropped: np.ndarray  # results-table rows beyond the 100 per image TIDE keeps


def _iou(dets: np.ndarray, gts: np.ndarray, crowd: bool) -> np.ndarray:
    """``(D, G)`` IoU of xywh boxes (crowd: intersection over the detection's area), pycocotools' arithmetic."""
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou(dets, gts, [int(crowd)] * len(gts)), dtype=np.float64).reshape(len(dets),
                                                                                                    len(gts))


def match_image(boxes: np.ndarray, classes: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray,
                crowd_boxes: np.ndarray, crowd_classes: np.ndarray) -> dict[str, np.ndarray]:
    """TIDE's matching and errors in one image; detections already in TIDE's order (descending score).

    boxes: (D, 4) xywh; gt_boxes: (G, 4) non-crowd; crowd_boxes: (C, 4). Returns per detection ``status``,
    ``error``, ``target`` (the ground truth an error points at, -1 none), ``fixable``, ``fix_class``; per ground
    truth ``used`` and ``missed``.
    """
    D, G = len(boxes), len(gt_boxes)
    status = np.full(D, FP, dtype=object)
    used = np.zeros(G, dtype=bool)
    iou = _iou(boxes, gt_boxes, crowd=False)
    same = classes[:, None] == gt_classes[None, :]
    cls_iou = iou * same
    # greedy in score order; only detections that reach the threshold with some box can take one
    for d in np.flatnonzero(cls_iou.max(axis=1, initial=0.0) >= POS_THRESHOLD):
        row = np.where(used, 0.0, cls_iou[d])
        j = int(np.argmax(row))
        if row[j] >= POS_THRESHOLD:
            status[d], used[j] = TP, True
    if len(crowd_boxes):
        crowd_iou = _iou(boxes, crowd_boxes, crowd=True)
        in_crowd = ((crowd_iou > POS_THRESHOLD) & (classes[:, None] == crowd_classes[None, :])).any(axis=1)
        status[(status == FP) & in_crowd] = IGNORED
    error = np.full(D, -1)
    target = np.full(D, -1)
    wrong = status != TP
    if G == 0:
        error[wrong] = _ERROR_CODE["Bkg"]
    else:
        box_j, box_v = cls_iou.argmax(axis=1), cls_iou.max(axis=1)
        other = iou * ~same
        cls_j, cls_v = other.argmax(axis=1), other.max(axis=1)
        dupe_v = (cls_iou * used[None, :]).max(axis=1)
        any_v = iou.max(axis=1)
        rules = [  # (error, condition, the box it points at); the first that holds wins
            ("Loc", (box_v >= BACKGROUND_THRESHOLD) & (box_v <= POS_THRESHOLD), box_j),
            ("Cls", cls_v >= POS_THRESHOLD, cls_j),
            ("Dupe", dupe_v >= POS_THRESHOLD, None),
            ("Bkg", any_v <= BACKGROUND_THRESHOLD, None),
            ("Both", np.ones(D, dtype=bool), None),
        ]
        undecided = wrong.copy()
        for name, cond, points_at in rules:
            hit = undecided & cond
            error[hit] = _ERROR_CODE[name]
            if points_at is not None:
                target[hit] = points_at[hit]
            undecided &= ~hit
    # Loc / Cls errors on a box nobody took: the first (highest score) of them is the one a fix turns positive
    points = np.flatnonzero(target >= 0)
    points = points[~used[target[points]]]
    fixable = np.zeros(D, dtype=bool)
    _, first = np.unique(target[points], return_index=True)
    fixable[points[first]] = True
    usable = np.zeros(G, dtype=bool)
    usable[target[points]] = True
    fix_class = np.where(error == _ERROR_CODE["Cls"], gt_classes[np.maximum(target, 0)] if G else classes, classes)
    return {"status": status, "error": error, "target": target, "fixable": fixable, "fix_class": fix_class,
            "used": used, "missed": ~used & ~usable}


def tide_match(dets: pd.DataFrame, gt: dict) -> TideMatch:
    """TIDE's matching of a results table (columns image_id, category_id, score, x, y, w, h) against a COCO
    ground-truth dataset dict, image by image in the ground truth's image order. The annotations are read field by
    field, so a ground truth without boxes (every detection is then a Bkg error) is read like any other."""
    anns = gt["annotations"]
    crowd = np.asarray([bool(a.get("iscrowd") or 0) for a in anns], dtype=bool)
    gt_xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    gt_img = np.asarray([a["image_id"] for a in anns], dtype=np.int64)
    gt_cls = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
    gt_rows = pd.Series(np.arange(len(anns))).groupby(gt_img).indices
    order = np.lexsort((np.arange(len(dets)), -dets["score"].to_numpy()))  # stable descending score
    det_img = dets["image_id"].to_numpy()[order]
    det_rows = pd.Series(order).groupby(det_img, sort=False).indices
    xywh = dets[["x", "y", "w", "h"]].to_numpy(np.float64)
    det_cls_all = dets["category_id"].to_numpy()
    score_all = dets["score"].to_numpy(np.float64)
    parts: dict[str, list] = {k: [] for k in ("index", "status", "error", "fix_class", "fixable", "gt_class",
                                              "gt_used", "gt_missed", "dropped")}
    for image in (im["id"] for im in gt["images"]):
        rows = order[det_rows[image]] if image in det_rows else np.zeros(0, dtype=np.int64)
        parts["dropped"].append(rows[MAX_DETS:])
        rows = rows[:MAX_DETS]
        g = gt_rows.get(image, np.zeros(0, dtype=np.int64))
        g_nc, g_c = g[~crowd[g]], g[crowd[g]]
        result = match_image(xywh[rows], det_cls_all[rows], gt_xywh[g_nc], gt_cls[g_nc], gt_xywh[g_c], gt_cls[g_c])
        parts["index"].append(rows)
        for key in ("status", "error", "fix_class", "fixable"):
            parts[key].append(result[key])
        parts["gt_class"].append(gt_cls[g_nc])
        parts["gt_used"].append(result["used"])
        parts["gt_missed"].append(result["missed"])
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    index = cat["index"].astype(np.int64)
    return TideMatch(index, det_cls_all[index], score_all[index], cat["status"], cat["error"].astype(int),
                     cat["fix_class"], cat["fixable"].astype(bool), cat["gt_class"], cat["gt_used"].astype(bool),
                     cat["gt_missed"].astype(bool), cat["dropped"].astype(np.int64))


def interpolated_ap(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """COCO's 101-point interpolated AP of one class (a fraction): scores sorted descending (stable), the precision
    envelope read at recall 0, 0.01, …, 1. 0 when the class has no positives."""
    if num_gt <= 0 or len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    true = np.cumsum(hits)
    precision = true / np.arange(1, len(hits) + 1)
    recall = true / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def mean_ap(cls: np.ndarray, scores: np.ndarray, tp: np.ndarray, positives: dict) -> float:
    """TIDE's mAP: the mean class AP over every class with positives or detections."""
    classes = sorted(set(cls.tolist()) | {c for c, n in positives.items() if n != 0})
    aps = []
    for c in classes:
        mine = cls == c
        aps.append(interpolated_ap(scores[mine], tp[mine], positives.get(c, 0)))
    return float(np.mean(aps)) if aps else 0.0


@dataclass
class TideCurve:
    """One AP computation of TIDE's breakdown: the detections it ranks (``entries``: positions in the `TideMatch`'s
    detection arrays, in the order TIDE pushes them, which decides equal scores), each one's class, score and hit,
    and which ground truths count as positives (``counted``, over the match's ground truths)."""

    entries: np.ndarray  # (n,) int
    cls: np.ndarray  # (n,)
    score: np.ndarray  # (n,) float64
    hit: np.ndarray  # (n,) bool
    counted: np.ndarray  # (G,) bool


def tide_curves(m: TideMatch) -> dict[str, TideCurve]:
    """The curves TIDE's ΔAPs compare: "base" (the detector as it is), each error of `MAIN_ERRORS` fixed alone, and
    the special "FalsePos" (perfect precision) and "FalseNeg" (perfect recall). Built from the match alone, which is
    per image, so the same curves serve the breakdown and its bootstrap over images (`replicates`)."""
    tp = m.status == TP
    fp = m.status == FP
    counted = tp | fp
    everyone = np.ones(len(m.gt_class), dtype=bool)
    tp_rows = np.flatnonzero(tp)
    curves = {"base": TideCurve(np.flatnonzero(counted), m.det_class[counted], m.det_score[counted], tp[counted],
                                everyone)}
    is_error = m.error >= 0
    for code, name in enumerate(MAIN_ERRORS):
        # errors keep their false positive (an ignored one has none) unless they are of the fixed type; fixed Loc /
        # Cls errors become true positives in their fix class, the others vanish; error entries come first, then
        # the true positives, in the order TIDE pushes them (it matters for equal scores only)
        this = m.error == code
        keep_fp = is_error & ~this & fp
        turn_tp = this & m.fixable
        err_rows = np.flatnonzero(keep_fp | turn_tp)
        curves[name] = TideCurve(
            np.concatenate([err_rows, tp_rows]),
            np.concatenate([np.where(turn_tp, m.fix_class, m.det_class)[err_rows], m.det_class[tp]]),
            np.concatenate([m.det_score[err_rows], m.det_score[tp]]),
            np.concatenate([turn_tp[err_rows], np.ones(len(tp_rows), dtype=bool)]),
            ~m.gt_missed if name == "Miss" else everyone)  # a fixed miss leaves the positives
    # special errors: perfect precision (true positives scored 1, false positives 0); perfect recall
    err_fp = np.flatnonzero(is_error & fp)
    hit = np.concatenate([np.zeros(len(err_fp), dtype=bool), np.ones(len(tp_rows), dtype=bool)])
    curves["FalsePos"] = TideCurve(np.concatenate([err_fp, tp_rows]),
                                   np.concatenate([m.det_class[err_fp], m.det_class[tp]]), hit.astype(np.float64),
                                   hit, everyone)
    base = curves["base"]
    curves["FalseNeg"] = TideCurve(base.entries, base.cls, base.score, base.hit, m.gt_used.copy())
    return curves


def curve_ap(m: TideMatch, curve: TideCurve) -> float:
    """TIDE's mAP of one curve (`mean_ap`), its positives the curve's counted ground truths."""
    positives = pd.Series(m.gt_class[curve.counted]).value_counts().to_dict()
    return mean_ap(curve.cls, curve.score, curve.hit, positives)


def tide_breakdown(m: TideMatch) -> tuple[pd.DataFrame, float]:
    """(ΔAP of each error type fixed alone, its count; TIDE's AP at IoU 0.5), ΔAP and AP as fractions."""
    curves = tide_curves(m)
    base = curve_ap(m, curves["base"])
    rows = []
    for code, name in enumerate(MAIN_ERRORS):
        count = int(m.gt_missed.sum()) if name == "Miss" else int((m.error == code).sum())
        rows.append({"error": name, "kind": "main", "delta_ap": max(curve_ap(m, curves[name]) - base, 0.0),
                     "count": count})
    counts = {"FalsePos": int(((m.error >= 0) & (m.status == FP)).sum()), "FalseNeg": int((~m.gt_used).sum())}
    for name in SPECIAL_ERRORS:  # not floored
        rows.append({"error": name, "kind": "special", "delta_ap": curve_ap(m, curves[name]) - base,
                     "count": counts[name]})
    return pd.DataFrame(rows, columns=list(TIDE_COLUMNS)), base


def error_names(m: TideMatch, num_rows: int) -> np.ndarray:
    """``(num_rows,)`` each results row's TIDE outcome: "tp", an error type, or "" (beyond TIDE's 100 per image)."""
    out = np.full(num_rows, "", dtype=object)
    names = np.array(MAIN_ERRORS + ("tp",), dtype=object)
    out[m.det_index] = names[np.where(m.error >= 0, m.error, len(MAIN_ERRORS))]
    return out

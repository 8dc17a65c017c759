"""COCO's ``analyze()`` breakdown (Hoiem-style, from the COCO API's Matlab ``analyze.m``) of one results file.

Seven precision–recall curves per class, each forgiving one more kind of error, read off COCOeval's evaluation
(`dhanalysis.metrics.coco_match`; area all, 100 detections per image and class):

- **C75**, **C50**: PR at IoU 0.75 and 0.5 (COCO's own curves: their AP is COCOeval's AP75 / AP50);
- **Loc**: PR at IoU 0.1 — localisation errors forgiven, duplicates still false positives;
- **Sim**: PR at IoU 0.1 after false positives on objects of another class *of the same supercategory* are removed:
  for class k those objects are added as ground truths of class k that COCOeval ignores, so a detection matching one
  (IoU ≥ 0.1, each such object absorbing one detection, COCOeval's rule for ignored ground truths) counts neither as
  true nor as false positive. Only when the json's categories have a ``supercategory``;
- **Oth**: the same with the objects of every other class;
- **BG**: precision 1 wherever Oth has reached a recall (all remaining false positives, the background, removed);
- **FN**: precision 1 everywhere (every missed object found).

An object is made "ignored" by giving its copy a negative area, outside COCOeval's area range "all": COCOeval then
ignores it with the ordinary IoU (marking it crowd would change the overlap to crowd-IoU). The per-class curves of
Sim and Oth come from one COCOeval run each, whose ground truth holds, in every image, copies only for the classes
with a detection the IoU-0.1 matching left unmatched there (elsewhere a copy cannot change anything). Classes
without ground truth get no curve; "all" is the mean over the others.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dhanalysis.metrics import coco_match

CURVES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
ANALYZE_COLUMNS = ("category_id", "category", "curve", "AP")
PR_COLUMNS = ("category_id", "category", "curve", "recall", "precision")
ALL_CLASSES = -1  # category_id of the mean over classes


def has_supercategories(gt: dict) -> bool:
    return all(c.get("supercategory") for c in gt["categories"])


def _with_ignored_copies(gt: coco_match.Boxes, detected: dict[int, set[int]],
                         siblings: dict[int, set[int]]) -> coco_match.Boxes:
    """The ground truth ``gt`` plus, in every image, ignored copies relabelled k of its objects of the classes in
    ``siblings[k]``, for each class k detected there (after the originals, in file order)."""
    rows, labels = [], []
    by_image: dict[int, list[int]] = {}
    for i, image in enumerate(gt.image):
        by_image.setdefault(int(image), []).append(i)
    for image, classes in detected.items():
        for i in by_image.get(image, ()):
            for k in classes:
                if int(gt.category[i]) in siblings[k]:
                    rows.append(i)
                    labels.append(k)
    rows = np.asarray(rows, np.int64)
    next_id = int(gt.ids.max(initial=0)) + 1
    return coco_match.Boxes(image=np.r_[gt.image, gt.image[rows]], category=np.r_[gt.category, np.asarray(labels,
                                                                                                          np.int64)],
                            xywh=np.r_[gt.xywh, gt.xywh[rows]], area=np.r_[gt.area, np.full(len(rows), -1.0)],
                            ids=np.r_[gt.ids, np.arange(next_id, next_id + len(rows), dtype=np.int64)],
                            crowd=np.r_[gt.crowd, gt.crowd[rows]])


def _unmatched_at(ev: coco_match.Evaluation, dt: coco_match.Boxes, t: int, area: int) -> dict[int, set[int]]:
    """image -> the classes with a detection COCOeval leaves unmatched (and not ignored) at threshold index ``t``:
    the only (image, class) pairs whose curves ignored copies can change, since COCOeval matches a detection to an
    ignored ground truth only when no other is left for it."""
    free = np.flatnonzero(ev.evaluated & (ev.dt_match[area, t] == 0) & ~ev.dt_ignore[area, t])
    out: dict[int, set[int]] = {}
    for image, cat in zip(dt.image[free].tolist(), dt.category[free].tolist()):
        out.setdefault(image, set()).add(cat)
    return out


def analyze_breakdown(gt: dict, gt_boxes: coco_match.Boxes, dt: coco_match.Boxes,
                      main_eval: coco_match.Evaluation) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(AP of each curve per class and over classes; the curves themselves, 101 recall points each).

    ``gt``: the ground-truth dataset dict and ``gt_boxes`` its annotations as arrays; ``dt``: the detections;
    ``main_eval``: their evaluation (`coco_match.evaluate`), whose iouThrs include 0.75, 0.5 and 0.1.
    """
    p = main_eval.params
    thr = np.asarray(p.iouThrs)
    area = coco_match.area_index(p)
    prec = main_eval.eval["precision"][:, :, :, area, -1]  # (T, R, K)
    index = {t: int(np.flatnonzero(np.isclose(thr, t))[0]) for t in (0.75, 0.5, 0.1)}
    cat_ids = list(p.catIds)
    curves = {"C75": prec[index[0.75]], "C50": prec[index[0.5]], "Loc": prec[index[0.1]]}
    detected = _unmatched_at(main_eval, dt, index[0.1], area)
    all_cats = {c["id"] for c in gt["categories"]}
    others = {k: all_cats - {k} for k in cat_ids}
    variants = {"Oth": others}
    if has_supercategories(gt):
        sup = {c["id"]: c["supercategory"] for c in gt["categories"]}
        variants = {"Sim": {k: {j for j in others[k] if sup[j] == sup[k]} for k in cat_ids}, **variants}
    for name, siblings in variants.items():
        ev = coco_match.evaluate(_with_ignored_copies(gt_boxes, detected, siblings), dt, p.imgIds, p.catIds, [0.1],
                                 coco_match.AREA_RANGES[:1], coco_match.AREA_LABELS[:1], (100,))
        curves[name] = ev.eval["precision"][0, :, :, 0, 0]
    no_gt = curves["C50"][0] < 0  # (K,) COCOeval's -1: no ground truth of the class
    curves["BG"] = (curves["Oth"] > 0).astype(np.float64)
    curves["FN"] = np.ones_like(curves["C50"])
    names = {c["id"]: c["name"] for c in gt["categories"]}
    recall = np.asarray(p.recThrs)
    ap_rows, pr_rows = [], []
    for curve in (c for c in CURVES if c in curves):
        values = np.where(no_gt[None, :], np.nan, np.maximum(curves[curve], 0.0))  # (R, K)
        for k, cat in enumerate(cat_ids):
            if no_gt[k]:
                continue
            ap_rows.append({"category_id": cat, "category": names[cat], "curve": curve,
                            "AP": float(values[:, k].mean())})
            pr_rows.append(pd.DataFrame({"category_id": cat, "category": names[cat], "curve": curve, "recall": recall,
                                         "precision": values[:, k]}))
        mean_curve = np.nanmean(values, axis=1) if (~no_gt).any() else np.full(len(recall), np.nan)
        ap_rows.append({"category_id": ALL_CLASSES, "category": "all", "curve": curve,
                        "AP": float(np.nanmean(values.mean(axis=0))) if (~no_gt).any() else float("nan")})
        pr_rows.append(pd.DataFrame({"category_id": ALL_CLASSES, "category": "all", "curve": curve, "recall": recall,
                                     "precision": mean_curve}))
    return (pd.DataFrame(ap_rows, columns=list(ANALYZE_COLUMNS)),
            pd.concat(pr_rows, ignore_index=True)[list(PR_COLUMNS)])

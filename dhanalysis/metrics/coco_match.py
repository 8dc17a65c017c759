"""COCOeval's box evaluation (``evaluate()`` + ``accumulate()``), vectorised: the same matching, the same
precision, recall and score arrays, computed over every (image, class) at once instead of in a Python loop per pair.

It is the package's one COCO box evaluation: `eval`'s AP of every inference mode and per-class AP
(`dhanalysis.engine.evaluate`, through `summarize` and `class_ap`), the study's AP on bootstrap replicates of the
images (`dhanalysis.metrics.resampled_ap`, reusing `precision_recall`) and the detections analysis
(`dhanalysis.metrics.detections`), which needs five evaluations of one results file — the real AP, two oracle
rescorings (a new score order changes the greedy matching) and analyze()'s Sim and Oth curves — where pycocotools
spends nearly all of each in its per-(image, class) loop. Every rule below is COCOeval's, and tests/test_coco_match.py
checks the arrays (and summarize()'s stats) against pycocotools' own on generated files with crowds, area ranges, tied
scores and IoUs and more than 100 detections per image and class, element for element:

- detections of an (image, class) are ranked by score, ties in file order (a stable sort), and the first
  ``max_dets[-1]`` are evaluated;
- IoU is pycocotools' ``bbIou`` in the same float64 operations (crowd ground truths divide by the detection's area);
- ground truths are ignored when crowd or when their ``area`` is outside the area range; a detection takes, in
  score order, the available ground truth of highest IoU >= the threshold (min(t, 1 - 1e-10)), preferring any
  non-ignored one to every ignored one, ties to the later one in COCOeval's order (non-ignored first, then file
  order); a crowd ground truth stays available; an unmatched detection whose area is outside the range is ignored;
- accumulation concatenates each image's first ``max_det`` detections in image-id order, sorts them by score with a
  stable sort, and reads the interpolated precision at the 101 recall thresholds as COCOeval does.

The matching runs rank by rank (at most ``max_dets[-1]`` steps per area range): a detection's candidates are the
pairs with IoU >= the lowest threshold, pre-sorted so that its choice at every threshold is its last available pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from dhanalysis.vocab import ALL_SIZES, SIZE_GROUPS
from dhanalysis.vocab import AREA_RANGES as RANGES_BY_LABEL

# COCOeval's default area ranges (params.areaRng, closed at both ends): "all", then the size groups (`vocab`'s)
AREA_LABELS = tuple(RANGES_BY_LABEL)
AREA_RANGES = tuple(RANGES_BY_LABEL.values())
MAX_DETS = (1, 10, 100)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class Boxes:
    """Ground truths or detections as arrays, one row per box in file order."""

    image: np.ndarray  # int64 image ids
    category: np.ndarray  # int64 category ids
    xywh: np.ndarray  # (N, 4) float64
    area: np.ndarray  # float64: the annotation's area (ground truth), w * h (detections, as loadRes sets it)
    ids: np.ndarray  # int64 annotation ids (detections: 1..N, as loadRes numbers them)
    crowd: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # ground truths only
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))  # detections only

    def __len__(self) -> int:
        return len(self.image)


def ground_truth_boxes(gt: dict) -> Boxes:
    """A COCO ground-truth dict's annotations (``iscrowd`` is COCOeval's ignore flag, whatever ``ignore`` says)."""
    anns = gt["annotations"]
    return Boxes(image=np.asarray([a["image_id"] for a in anns], np.int64).reshape(-1),
                 category=np.asarray([a["category_id"] for a in anns], np.int64).reshape(-1),
                 xywh=np.asarray([a["bbox"] for a in anns], np.float64).reshape(-1, 4),
                 area=np.asarray([a["area"] for a in anns], np.float64).reshape(-1),
                 ids=np.asarray([a["id"] for a in anns], np.int64).reshape(-1),
                 crowd=np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool).reshape(-1))


def result_boxes(results: Sequence[dict]) -> Boxes:
    """A COCO results list (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) as pycocotools' ``loadRes``
    reads it: area w * h, ids 1..N in list order."""
    return detection_boxes([r["image_id"] for r in results], [r["category_id"] for r in results],
                           [r["bbox"] for r in results], [r["score"] for r in results])


def detection_boxes(image: np.ndarray, category: np.ndarray, xywh: np.ndarray, score: np.ndarray) -> Boxes:
    xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
    return Boxes(image=np.asarray(image, np.int64), category=np.asarray(category, np.int64), xywh=xywh,
                 area=xywh[:, 2] * xywh[:, 3], ids=np.arange(1, len(xywh) + 1, dtype=np.int64),
                 score=np.asarray(score, np.float64))


def box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' ``bbIou`` for aligned pairs (``d[i]`` with ``g[i]``), in its float64 operations and order."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da, ga = d[:, 2] * d[:, 3], g[:, 2] * g[:, 3]
    union = np.where(crowd, da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def ground_truth_ignored(gt: Boxes, area_range: tuple[float, float]) -> np.ndarray:
    """COCOeval's gtIgnore of every ground truth under one area range: a crowd, or an ``area`` outside the range.
    The one statement of the rule, read by the evaluation and by the counts of ground truths that count."""
    lo, hi = area_range
    return gt.crowd | (gt.area < lo) | (gt.area > hi)


def area_index(params: SimpleNamespace, label: str = ALL_SIZES) -> int:
    """Position of area range ``label`` (default "all") in an evaluation's ``areaRngLbl``: found by label, as
    COCOeval's summarize finds it, whatever ranges the evaluation ran."""
    labels = list(params.areaRngLbl)
    if label not in labels:
        raise ValueError(f"area range {label!r} is not one of the evaluation's {labels}")
    return labels.index(label)


@dataclass
class Evaluation:
    """What an evaluated and accumulated COCOeval holds, as arrays.

    ``params`` has COCOeval's attribute names (iouThrs, recThrs, areaRng, areaRngLbl, maxDets, catIds, imgIds);
    ``eval`` its ``precision`` (T, R, K, A, M), ``recall`` (T, K, A, M) and ``scores``. Per detection (file order):
    ``evaluated`` (among the ``maxDets[-1]`` best of its image and class, on an evaluated image and class),
    ``rank`` within its image and class, and for every area range and threshold ``dt_match`` (the matched ground
    truth's id, 0 none) and ``dt_ignore`` (COCOeval's dtIgnore; False where not evaluated).
    """

    params: SimpleNamespace
    eval: dict
    evaluated: np.ndarray
    rank: np.ndarray
    dt_match: np.ndarray  # (A, T, N) int64
    dt_ignore: np.ndarray  # (A, T, N) bool


def _group_index(image: np.ndarray, category: np.ndarray, img_pos: dict, cat_pos: dict) -> tuple[np.ndarray, ...]:
    ip = np.fromiter((img_pos.get(int(i), -1) for i in image), np.int64, len(image))
    kp = np.fromiter((cat_pos.get(int(c), -1) for c in category), np.int64, len(category))
    return ip, kp


def evaluate(gt: Boxes, dt: Boxes, image_ids: Sequence[int], cat_ids: Sequence[int],
             iou_thresholds: Sequence[float] = tuple(np.linspace(0.5, 0.95, 10)),
             area_ranges: Sequence[tuple[float, float]] = AREA_RANGES,
             area_labels: Sequence[str] = AREA_LABELS, max_dets: Sequence[int] = MAX_DETS) -> Evaluation:
    """COCOeval(gt, dt, "bbox") with these parameters, evaluated and accumulated (see the module's docstring).

    ``cat_ids``: every category of the ground truth's ``categories`` (COCOeval's default), not only those with
    objects; image and category ids are sorted and made unique, and ``max_dets`` sorted, as COCOeval does.
    """
    image_ids = [int(i) for i in np.unique(np.asarray(image_ids, np.int64))]
    cat_ids = [int(c) for c in np.unique(np.asarray(cat_ids, np.int64))]
    max_dets = sorted(int(m) for m in max_dets)
    thr = np.asarray(iou_thresholds, np.float64)
    img_pos = {i: p for p, i in enumerate(image_ids)}
    cat_pos = {c: p for p, c in enumerate(cat_ids)}
    d_img, d_cat = _group_index(dt.image, dt.category, img_pos, cat_pos)
    g_img, g_cat = _group_index(gt.image, gt.category, img_pos, cat_pos)
    rank, evaluated = _rank(d_img, d_cat, dt.score, len(image_ids), max_dets[-1])
    known = (g_img >= 0) & (g_cat >= 0)  # ground truths of the evaluated images and classes
    pairs = _candidate_pairs(gt, dt, np.where(evaluated, d_cat * len(image_ids) + d_img, -1),
                             np.where(known, g_cat * len(image_ids) + g_img, -1), rank, thr)
    dt_match = np.zeros((len(area_ranges), len(thr), len(dt)), np.int64)
    dt_ignore = np.zeros((len(area_ranges), len(thr), len(dt)), bool)
    positives = np.zeros((len(area_ranges), len(cat_ids)), np.int64)  # ground truths that count, per class
    for a, (lo, hi) in enumerate(area_ranges):
        g_ign = ground_truth_ignored(gt, (lo, hi))
        _match_area(pairs, g_ign, gt.ids, thr, max_dets[-1], dt_match[a], dt_ignore[a])
        outside = (dt.area < lo) | (dt.area > hi)
        dt_ignore[a] |= (dt_match[a] == 0) & (outside & evaluated)[None, :]
        positives[a] = np.bincount(g_cat[known & ~g_ign], minlength=len(cat_ids))
    acc = np.flatnonzero(evaluated)
    # COCOeval's order: class, then score (stable) over the concatenation in image order and within-image rank
    acc = acc[np.lexsort((rank[acc], d_img[acc], -dt.score[acc], d_cat[acc]))]
    precision, recall, scores = _accumulate(dt_match, dt_ignore, dt.score, rank, acc, d_cat[acc], positives,
                                            max_dets)
    params = SimpleNamespace(iouThrs=thr, recThrs=REC_THRS, areaRng=[list(r) for r in area_ranges],
                             areaRngLbl=list(area_labels), maxDets=list(max_dets), catIds=cat_ids, imgIds=image_ids)
    return Evaluation(params, {"precision": precision, "recall": recall, "scores": scores}, evaluated, rank,
                      dt_match, dt_ignore)


def _rank(d_img: np.ndarray, d_cat: np.ndarray, score: np.ndarray, num_images: int, max_det: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each detection within its image and class by falling score, ties in file order; whether it is
    evaluated: of an evaluated image and class, and among its ``max_det`` best)."""
    n = len(score)
    keep = (d_img >= 0) & (d_cat >= 0)
    group = np.where(keep, d_cat * num_images + d_img, -1)
    order = np.lexsort((np.arange(n), -score, group))
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1] if n else np.zeros(0, np.int64)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return rank, keep & (rank < max_det)


@dataclass
class _Pairs:
    """Every (evaluated detection, ground truth of its image and class) pair with IoU >= the lowest threshold."""

    det: np.ndarray  # detection rows
    gt: np.ndarray  # ground-truth rows
    slot: np.ndarray  # the ground truth's position in its group, file order (COCOeval's order among equals)
    crowd: np.ndarray
    iou: np.ndarray
    rank: np.ndarray  # the detection's rank


def _candidate_pairs(gt: Boxes, dt: Boxes, group: np.ndarray, g_group: np.ndarray, rank: np.ndarray,
                     thr: np.ndarray) -> _Pairs:
    """The pairs an evaluated detection may match, with pycocotools' IoU (``group``, ``g_group``: the image-and-class
    group of each detection and ground truth, -1 for those not evaluated)."""
    det_rows = np.flatnonzero(group >= 0)
    g_keep = np.flatnonzero(g_group >= 0)
    g_order = np.argsort(g_group[g_keep], kind="stable")  # file order within a group
    g_sorted, g_rows = g_group[g_keep][g_order], g_keep[g_order]
    lo = np.searchsorted(g_sorted, group[det_rows], side="left")
    counts = np.searchsorted(g_sorted, group[det_rows], side="right") - lo
    pair_det = np.repeat(det_rows, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_slot = np.repeat(lo, counts) + offsets  # position in g_sorted
    pair_gt = g_rows[pair_slot]
    crowd = gt.crowd[pair_gt]
    iou = box_iou(dt.xywh[pair_det], gt.xywh[pair_gt], crowd)
    near = iou >= min(float(thr.min()), 1 - 1e-10) if len(thr) else np.zeros(len(iou), bool)
    return _Pairs(pair_det[near], pair_gt[near], pair_slot[near], crowd[near], iou[near], rank[pair_det[near]])


def _match_area(pairs: _Pairs, g_ign: np.ndarray, gt_ids: np.ndarray, thr: np.ndarray, max_det: int,
                dt_match: np.ndarray, dt_ignore: np.ndarray) -> None:
    """COCOeval's greedy matching under one area range (``g_ign``: its ignored ground truths), rank by rank over
    every image and class at once; fills ``dt_match`` and ``dt_ignore`` ``(T, N)`` (matched to an ignored one)."""
    bound = np.minimum(thr, 1 - 1e-10)[:, None]  # COCOeval's min([t, 1 - 1e-10])
    ign = g_ign[pairs.gt]
    # within a detection: non-ignored after ignored, then IoU, then COCOeval's ground-truth order (non-ignored
    # first, file order) — so the last available pair is COCOeval's choice
    p = np.lexsort((pairs.slot, pairs.iou, ~ign, pairs.det, pairs.rank))
    p_det, p_gt, p_ign, p_crowd, p_iou = pairs.det[p], pairs.gt[p], ign[p], pairs.crowd[p], pairs.iou[p]
    taken = np.zeros((len(thr), len(g_ign)), bool)
    rank_bounds = np.searchsorted(pairs.rank[p], np.arange(max_det + 1))
    for r in range(max_det):
        s, e = rank_bounds[r], rank_bounds[r + 1]
        if s == e:
            continue
        dets, gts = p_det[s:e], p_gt[s:e]
        ok = (p_iou[s:e][None, :] >= bound) & (p_crowd[s:e][None, :] | ~taken[:, gts])
        first = np.r_[0, np.flatnonzero(np.diff(dets)) + 1]
        pos = np.where(ok, np.arange(e - s)[None, :], -1)
        best = np.maximum.reduceat(pos, first, axis=1)  # (T, detections of this rank)
        t_idx, d_idx = np.nonzero(best >= 0)
        chosen = best[t_idx, d_idx]
        taken[t_idx, gts[chosen]] = True
        dt_match[t_idx, dets[first[d_idx]]] = gt_ids[gts[chosen]]
        dt_ignore[t_idx, dets[first[d_idx]]] = p_ign[s:e][chosen]


def _accumulate(dt_match: np.ndarray, dt_ignore: np.ndarray, score: np.ndarray, rank: np.ndarray, acc: np.ndarray,
                acc_cat: np.ndarray, positives: np.ndarray, max_dets: list[int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval's accumulate: (precision (T, R, K, A, M), recall (T, K, A, M), scores (T, R, K, A, M)), -1 where a
    class has no ground truth that counts. ``acc``: the evaluated detections in accumulation order, ``acc_cat``
    their class positions; ``positives`` ``(A, K)``."""
    (A, T, _), K, R, M = dt_match.shape, positives.shape[1], len(REC_THRS), len(max_dets)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    cat_bounds = np.searchsorted(acc_cat, np.arange(K + 1))
    for a in range(A):
        for k in np.flatnonzero(positives[a] > 0):  # COCOeval leaves -1: no ground truth that counts
            rows = acc[cat_bounds[k]:cat_bounds[k + 1]]
            for m, md in enumerate(max_dets):
                sel = rows[rank[rows] < md]
                precision[:, :, k, a, m], recall[:, k, a, m], scores[:, :, k, a, m] = precision_recall(
                    dt_match[a][:, sel] != 0, dt_ignore[a][:, sel], score[sel], int(positives[a, k]))
    return precision, recall, scores


def precision_recall(matched: np.ndarray, ignored: np.ndarray, score: np.ndarray, positives: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class's curves as COCOeval's accumulate reads them: (interpolated precision ``(T, R)`` at the recall
    thresholds `REC_THRS`, recall ``(T,)`` reached, score ``(T, R)`` where each threshold is read).

    ``matched``, ``ignored`` ``(T, D)``: the detections in accumulation order (falling score); ``positives``: the
    ground truths that count (> 0). Precision is made monotone from the right and is 0 past the highest recall."""
    T, nd = matched.shape
    tp = np.cumsum(matched & ~ignored, axis=1).astype(dtype=float)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(dtype=float)
    precision, at = np.zeros((T, len(REC_THRS))), np.zeros((T, len(REC_THRS)))
    if not nd:
        return precision, np.zeros(T), at
    rc = tp / positives
    pr = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    for t in range(T):
        inds = np.searchsorted(rc[t], REC_THRS, side="left")
        valid = inds < nd
        precision[t, valid] = pr[t, inds[valid]]
        at[t, valid] = score[inds[valid]]
    return precision, rc[:, -1], at


# ---------------------------------------------------------------------------------------------------- summaries
def summarize(ev: Evaluation) -> np.ndarray:
    """COCOeval.summarize()'s twelve box statistics (its ``stats``): AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100,
    ARs, ARm, ARl. Each is the mean of the precision (recall) entries of its IoU threshold(s), area range (found by
    label) and max detections that exist (> -1); -1 where none does, as COCOeval reports it. Needs COCOeval's three
    max detections (the AP at 0.5 and 0.75 and the area APs read the third, the ARs each)."""
    md = list(ev.params.maxDets)
    if len(md) < 3:
        raise ValueError(f"COCOeval's summary reads three max detections; the evaluation has {md}")
    specs = [("precision", None, ALL_SIZES, 100), ("precision", 0.5, ALL_SIZES, md[2]),
             ("precision", 0.75, ALL_SIZES, md[2]), *(("precision", None, g, md[2]) for g in SIZE_GROUPS),
             *(("recall", None, ALL_SIZES, m) for m in md[:3]), *(("recall", None, g, md[2]) for g in SIZE_GROUPS)]
    return np.array([_summary_value(ev, *spec) for spec in specs])


def _summary_value(ev: Evaluation, array: str, iou: float | None, area: str, max_det: int) -> float:
    """One of summarize()'s numbers: ``array`` ("precision" (T, R, K, A, M) or "recall" (T, K, A, M)) at ``iou``
    (every threshold when None; an exact match, as COCOeval's), ``area`` and ``max_det``."""
    p = ev.params
    s = ev.eval[array]
    if iou is not None:
        s = s[np.flatnonzero(np.asarray(p.iouThrs) == iou)]
    s = np.take(np.take(s, [i for i, lbl in enumerate(p.areaRngLbl) if lbl == area], axis=-2),
                [i for i, m in enumerate(p.maxDets) if m == max_det], axis=-1)
    s = s[s > -1]
    return float(np.mean(s)) if s.size else -1.0


def class_ap(ev: Evaluation, area: str = ALL_SIZES) -> np.ndarray:
    """``(K,)`` each class's AP (in ``catIds`` order): COCOeval's precision of the class averaged over the IoU
    thresholds and recall points under ``area`` and the largest max detections; NaN for a class without ground truth
    that counts (its entries are -1)."""
    prec = ev.eval["precision"][:, :, :, area_index(ev.params, area), -1]  # (T, R, K)
    out = np.full(prec.shape[2], np.nan)
    for k in range(prec.shape[2]):
        p = prec[:, :, k]
        p = p[p > -1]
        if p.size:
            out[k] = float(p.mean())
    return out


@dataclass
class Outcomes:
    """COCOeval's verdict on every detection it counts at one IoU threshold and area range: the evaluated detections
    it did not ignore (a detection matched to a crowd, or unmatched and outside the area range, is neither right nor
    wrong), in file order. ``positives``: per class (position in ``catIds``), the ground truths that count (not
    ignored), the denominator of recall."""

    rows: np.ndarray  # (D,) int64 positions in the results file
    category: np.ndarray  # (D,) int64 class positions in params.catIds
    score: np.ndarray  # (D,) float64
    tp: np.ndarray  # (D,) bool: matched to a ground truth that counts
    iou: np.ndarray  # (D,) float64: IoU with the matched ground truth (bbIou), 0 for a false positive
    positives: np.ndarray  # (K,) int64


def outcomes(ev: Evaluation, gt: Boxes, dt: Boxes, iou_threshold: float, area: str = ALL_SIZES) -> Outcomes:
    """Every counted detection of ``dt`` at ``iou_threshold`` (one of ``ev``'s thresholds) under ``area``, with its
    true-positive flag and the IoU of its match: what the measures of a matching (LRP, calibration) are sums over.
    ``ev`` is the evaluation of ``dt`` on ``gt``."""
    p = ev.params
    thr = np.asarray(p.iouThrs, np.float64)
    hit = np.flatnonzero(np.isclose(thr, iou_threshold, rtol=0, atol=1e-12))
    if not len(hit):
        raise ValueError(f"IoU {iou_threshold} is not one of the evaluation's thresholds {thr.tolist()}")
    a, t = area_index(p, area), int(hit[0])
    rows = np.flatnonzero(ev.evaluated & ~ev.dt_ignore[a, t])
    match = ev.dt_match[a, t][rows]
    tp = match > 0
    by_id = np.argsort(gt.ids, kind="stable")
    g = by_id[np.searchsorted(gt.ids, match[tp], sorter=by_id)]  # the matched ground truths' rows
    iou = np.zeros(len(rows))
    iou[tp] = box_iou(dt.xywh[rows[tp]], gt.xywh[g], gt.crowd[g])
    cat_ids = np.asarray(p.catIds, np.int64)
    counted = (~ground_truth_ignored(gt, tuple(p.areaRng[a])) & np.isin(gt.category, cat_ids)
               & np.isin(gt.image, np.asarray(p.imgIds, np.int64)))
    positives = np.bincount(np.searchsorted(cat_ids, gt.category[counted]), minlength=len(cat_ids))
    return Outcomes(rows, np.searchsorted(cat_ids, dt.category[rows]), dt.score[rows], tp, iou, positives)

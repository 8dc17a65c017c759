"""COCOeval's box evaluation (``evaluate()`` + ``accumulate()``), vectorised: the same matching, the same
precision, recall and score arrays, computed over every (image, class) at once instead of in a Python loop per pair.

Why: the detections analysis (`dhanalysis.metrics.detections`) needs five evaluations of one results file — the
real AP, two oracle rescorings (a new score order changes the greedy matching) and analyze()'s Sim and Oth curves —
and pycocotools spends nearly all of each in its per-(image, class) loop. Every rule below is COCOeval's, and
tests/test_coco_match.py checks the arrays against pycocotools' own on generated files with crowds, area ranges,
tied scores and IoUs and more than 100 detections per image and class, element for element:

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

from dhanalysis.vocab import LARGE_MIN_AREA, SIZE_GROUPS, SMALL_MAX_AREA

# COCOeval's default area ranges (params.areaRng, closed at both ends): "all", then the size groups, whose bounds are
# the vocabulary's (`vocab.size_index` assigns an area on a shared bound to the larger group, as COCOeval counts it)
AREA_LABELS = ("all", *SIZE_GROUPS)
AREA_RANGES = ((0.0, 1e10), (0.0, float(SMALL_MAX_AREA)), (float(SMALL_MAX_AREA), float(LARGE_MIN_AREA)),
               (float(LARGE_MIN_AREA), 1e10))
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
    T, A, K, I = len(thr), len(area_ranges), len(cat_ids), len(image_ids)
    max_det = int(max_dets[-1])
    img_pos = {i: p for p, i in enumerate(image_ids)}
    cat_pos = {c: p for p, c in enumerate(cat_ids)}

    # ---- detections: rank within (image, class) by score, ties in file order
    d_img, d_cat = _group_index(dt.image, dt.category, img_pos, cat_pos)
    n = len(dt)
    keep = (d_img >= 0) & (d_cat >= 0)
    group = np.where(keep, d_cat * I + d_img, -1)
    order = np.lexsort((np.arange(n), -dt.score, group))
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1] if n else np.zeros(0, np.int64)
    rank = np.empty(n, np.int64)
    seg_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank[order] = np.arange(n) - seg_start
    evaluated = keep & (rank < max_det)

    # ---- ground truths of the evaluated images and classes
    g_img, g_cat = _group_index(gt.image, gt.category, img_pos, cat_pos)
    g_keep = np.flatnonzero((g_img >= 0) & (g_cat >= 0))
    g_group = g_cat[g_keep] * I + g_img[g_keep]

    # ---- candidate pairs: every evaluated detection with every ground truth of its group, IoU >= lowest threshold
    det_rows = np.flatnonzero(evaluated)
    det_group = group[det_rows]
    g_order = np.argsort(g_group, kind="stable")  # file order within a group
    g_sorted, g_rows = g_group[g_order], g_keep[g_order]
    lo = np.searchsorted(g_sorted, det_group, side="left")
    hi = np.searchsorted(g_sorted, det_group, side="right")
    counts = hi - lo
    pair_det = np.repeat(det_rows, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_slot = np.repeat(lo, counts) + offsets  # position in g_sorted
    pair_gt = g_rows[pair_slot]
    crowd = gt.crowd[pair_gt]
    iou = box_iou(dt.xywh[pair_det], gt.xywh[pair_gt], crowd)
    near = iou >= min(float(thr.min()), 1 - 1e-10) if T else np.zeros(len(iou), bool)
    pair_det, pair_gt, pair_slot, crowd, iou = (a[near] for a in (pair_det, pair_gt, pair_slot, crowd, iou))
    pair_rank = rank[pair_det]
    bound = np.minimum(thr, 1 - 1e-10)[:, None]  # COCOeval's min([t, 1 - 1e-10])

    dt_match = np.zeros((A, T, n), np.int64)
    dt_ignore = np.zeros((A, T, n), bool)
    gt_ignored_by_area = []
    for a, (a_lo, a_hi) in enumerate(area_ranges):
        g_ign = ground_truth_ignored(gt, (a_lo, a_hi))
        gt_ignored_by_area.append(g_ign)
        ign = g_ign[pair_gt]
        # within a detection: non-ignored after ignored, then IoU, then COCOeval's ground-truth order (non-ignored
        # first, file order) — so the last available pair is COCOeval's choice
        p = np.lexsort((pair_slot, iou, ~ign, pair_det, pair_rank))
        p_det, p_gt, p_ign, p_crowd, p_iou, p_rank = (x[p] for x in (pair_det, pair_gt, ign, crowd, iou, pair_rank))
        taken = np.zeros((T, len(gt)), bool)
        rank_bounds = np.searchsorted(p_rank, np.arange(max_det + 1))
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
            dt_match[a, t_idx, dets[first[d_idx]]] = gt.ids[gts[chosen]]
            dt_ignore[a, t_idx, dets[first[d_idx]]] = p_ign[s:e][chosen]
        outside = (dt.area < a_lo) | (dt.area > a_hi)
        dt_ignore[a] |= (dt_match[a] == 0) & (outside & evaluated)[None, :]

    # ---- accumulate
    R, M = len(REC_THRS), len(max_dets)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    # COCOeval's order: class, then score (stable) over the concatenation in image order and within-image rank
    acc = det_rows[np.lexsort((rank[det_rows], d_img[det_rows], -dt.score[det_rows], d_cat[det_rows]))]
    acc_cat = d_cat[acc]
    cat_bounds = np.searchsorted(acc_cat, np.arange(K + 1))
    for a in range(A):
        npig_all = np.bincount(g_cat[g_keep][~gt_ignored_by_area[a][g_keep]], minlength=K)
        for k in range(K):
            s, e = cat_bounds[k], cat_bounds[k + 1]
            npig = int(npig_all[k])
            if npig == 0:
                continue  # COCOeval leaves -1: no ground truth that counts
            rows = acc[s:e]
            for m, md in enumerate(max_dets):
                sel = rows[rank[rows] < md]
                matched = dt_match[a][:, sel] != 0
                ignored = dt_ignore[a][:, sel]
                tps = matched & ~ignored
                fps = ~matched & ~ignored
                tp_sum = np.cumsum(tps, axis=1).astype(dtype=float)
                fp_sum = np.cumsum(fps, axis=1).astype(dtype=float)
                nd = len(sel)
                sc = dt.score[sel]
                for t in range(T):
                    tp, fp = tp_sum[t], fp_sum[t]
                    rc = tp / npig
                    pr = tp / (fp + tp + np.spacing(1))
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    if nd:
                        pr = np.maximum.accumulate(pr[::-1])[::-1]
                    inds = np.searchsorted(rc, REC_THRS, side="left")
                    valid = inds < nd
                    q = np.zeros(R)
                    ss = np.zeros(R)
                    q[valid] = pr[inds[valid]]
                    ss[valid] = sc[inds[valid]]
                    precision[t, :, k, a, m] = q
                    scores[t, :, k, a, m] = ss
    params = SimpleNamespace(iouThrs=thr, recThrs=REC_THRS, areaRng=[list(r) for r in area_ranges],
                             areaRngLbl=list(area_labels), maxDets=list(max_dets), catIds=cat_ids, imgIds=image_ids)
    return Evaluation(params, {"precision": precision, "recall": recall, "scores": scores}, evaluated, rank,
                      dt_match, dt_ignore)


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


def outcomes(ev: Evaluation, gt: Boxes, dt: Boxes, iou_threshold: float, area: str = "all") -> Outcomes:
    """Every counted detection of ``dt`` at ``iou_threshold`` (one of ``ev``'s thresholds) under ``area``, with its
    true-positive flag and the IoU of its match: what the measures of a matching (LRP, calibration) are sums over.
    ``ev`` is the evaluation of ``dt`` on ``gt``."""
    p = ev.params
    thr = np.asarray(p.iouThrs, np.float64)
    hit = np.flatnonzero(np.isclose(thr, iou_threshold, rtol=0, atol=1e-12))
    if not len(hit):
        raise ValueError(f"IoU {iou_threshold} is not one of the evaluation's thresholds {thr.tolist()}")
    a, t = list(p.areaRngLbl).index(area), int(hit[0])
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

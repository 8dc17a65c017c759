"""COCO AP on bootstrap replicates of the evaluated images, from one `coco_match` evaluation (the study's AP claims,
`dhanalysis.study.evidence`).

A replicate draws the images with replacement (`bootstrap.replicate_counts`, `bootstrap.positions_of`); its AP is
COCOeval's on a dataset that holds each drawn image as often as it was drawn, the copies in draw order. COCOeval
matches within an image, so one matching serves every copy; only the accumulation is redone per replicate: each
class's evaluated detections of the drawn images, concatenated in draw order (an image's own in rank order), sorted by
falling score with a stable sort and read by `coco_match.precision_recall`, the accumulation `coco_match.evaluate`
itself runs. A replicate's AP is thus pycocotools' on the copied images (tests/test_bootstrap.py).

`CocoMatches.ap_replicates` computes every replicate at once, to the same bits, on integers until the last division.
Within one class the copies of a detection are neighbours in the accumulation order (unless another detection of its
image has the same score), and along a run of copies precision only rises (true positives) or recall stays (false
positives), so every recall threshold's interpolated precision is read at a run's end: the cumulative true positives
and counted detections with each detection weighted by its image's draw count, one row per replicate, read at the
true positives (past one, precision only falls until the next). Detections of one image with one score are the
exception (their copies interleave): they are written out once per copy, each present where the image is drawn that
often. `bench/replicates.py` measures the gain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dhanalysis.metrics import coco_match

# replicates per block of `ap_replicates`: its (block, detections of a class) arrays stay near 8 MB
_BLOCK_ELEMENTS = 1_000_000


@dataclass
class CocoMatches:
    """One results file's matching under area "all" and the largest max detections (COCOeval's 100), kept so that
    AP can be recomputed on resampled images.

    The evaluated detections, sorted by class, image and rank: ``image`` and ``category`` positions (in
    ``image_ids`` and the ground truth's sorted category ids), ``score``, and per IoU threshold ``matched`` and
    ``ignored`` ``(T, D)``; ``positives`` ``(I, K)``: the ground truths that count, per image and class.
    """

    image_ids: list[int]
    image: np.ndarray  # (D,) int64
    category: np.ndarray  # (D,) int64
    score: np.ndarray  # (D,) float64
    matched: np.ndarray  # (T, D) bool
    ignored: np.ndarray  # (T, D) bool
    positives: np.ndarray  # (I, K) int64
    iou_thresholds: np.ndarray

    @classmethod
    def from_results(cls, coco_gt, results: list[dict], image_ids: Sequence[int]) -> CocoMatches:
        """The matching of a COCO results list on ``image_ids`` of ``coco_gt`` (a pycocotools COCO or its dataset
        dict), at COCOeval's IoU thresholds 0.50:0.95."""
        gt = getattr(coco_gt, "dataset", coco_gt)
        gt_boxes, dt = coco_match.ground_truth_boxes(gt), coco_match.result_boxes(results)
        ev = coco_match.evaluate(gt_boxes, dt, image_ids, [c["id"] for c in gt["categories"]],
                                 area_ranges=coco_match.AREA_RANGES[:1], area_labels=coco_match.AREA_LABELS[:1],
                                 max_dets=coco_match.MAX_DETS[-1:])
        return cls.from_evaluation(ev, gt_boxes, dt)

    @classmethod
    def from_evaluation(cls, ev: coco_match.Evaluation, gt: coco_match.Boxes, dt: coco_match.Boxes) -> CocoMatches:
        """What a replicate needs of ``ev`` (the evaluation of ``dt`` on ``gt``): its area "all" and its largest
        max detections."""
        p = ev.params
        a = coco_match.area_index(p)
        ids, cats = np.asarray(p.imgIds, np.int64), np.asarray(p.catIds, np.int64)
        rows = np.flatnonzero(ev.evaluated)
        img, cat = np.searchsorted(ids, dt.image[rows]), np.searchsorted(cats, dt.category[rows])
        order = np.lexsort((ev.rank[rows], img, cat))
        rows, img, cat = rows[order], img[order], cat[order]
        counted = (~coco_match.ground_truth_ignored(gt, tuple(p.areaRng[a])) & np.isin(gt.image, ids)
                   & np.isin(gt.category, cats))
        positives = np.zeros((len(ids), len(cats)), np.int64)
        np.add.at(positives, (np.searchsorted(ids, gt.image[counted]), np.searchsorted(cats, gt.category[counted])), 1)
        return cls([int(i) for i in ids], img, cat, dt.score[rows], ev.dt_match[a][:, rows] != 0,
                   ev.dt_ignore[a][:, rows], positives, np.asarray(p.iouThrs, np.float64))

    def _drawn(self, positions: np.ndarray) -> np.ndarray:
        """Detection indices of the dataset whose images are ``positions``, in COCOeval's concatenation order per
        class: class, then draw slot, then rank (a repeated image's detections once per copy)."""
        num_images, num_classes = self.positives.shape
        key = self.category * num_images + self.image  # sorted: detections are by class, image, rank
        wanted = (np.arange(num_classes)[:, None] * num_images + positions[None, :]).ravel()
        lo = np.searchsorted(key, wanted, side="left")
        n = np.searchsorted(key, wanted, side="right") - lo
        return np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)

    def precision(self, positions: np.ndarray | None = None) -> np.ndarray:
        """``(T, R, K)`` COCOeval's interpolated precision on the images at ``positions`` (repeats allowed; default
        every image once); -1 where a class has no ground truth that counts there."""
        positions = np.arange(len(self.image_ids)) if positions is None else np.asarray(positions, np.int64)
        num_classes = self.positives.shape[1]
        drawn = self._drawn(positions)
        order = drawn[np.lexsort((np.arange(len(drawn)), -self.score[drawn], self.category[drawn]))]
        bounds = np.searchsorted(self.category[order], np.arange(num_classes + 1))
        positives = self.positives[positions].sum(axis=0)
        out = -np.ones((len(self.iou_thresholds), len(coco_match.REC_THRS), num_classes))
        for k in np.flatnonzero(positives > 0):
            sel = order[bounds[k]:bounds[k + 1]]
            out[:, :, k] = coco_match.precision_recall(self.matched[:, sel], self.ignored[:, sel], self.score[sel],
                                                       int(positives[k]))[0]
        return out

    def ap(self, positions: np.ndarray | None = None) -> tuple[float, float]:
        """(AP over IoU 0.50:0.95, AP50) on the images at ``positions`` (default: every image once): the mean of
        the precision entries that exist, as COCOeval's summarize; NaN where no class has a ground truth."""
        return self._summarize(self.precision(positions))

    def _summarize(self, prec: np.ndarray) -> tuple[float, float]:
        """(AP, AP50) of one ``(T, R, K)`` precision array: the mean of the entries that exist (> -1), over every
        IoU threshold and over 0.5's, as COCOeval's summarize; NaN where none exists."""
        at_50 = self.iou_thresholds == 0.5
        return _mean_existing(prec), _mean_existing(prec[at_50] if at_50.any() else prec[:1])

    def ap_replicates(self, counts: np.ndarray) -> np.ndarray:
        """``(B, 2)`` (AP over IoU 0.50:0.95, AP50) on each replicate of ``counts`` ``(B, I)`` (how often each image
        is drawn; `bootstrap.replicate_counts`): row b equals ``ap(positions_of(counts[b]))`` to the bit, computed
        for every replicate at once (the module docstring says why that is exact)."""
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != len(self.image_ids) or (counts < 0).any() or (counts % 1).any():
            raise ValueError(f"counts must be (replicates, {len(self.image_ids)}) non-negative whole numbers")
        counts = counts.astype(np.int64)
        num_thresholds, num_classes = len(self.iou_thresholds), self.positives.shape[1]
        prec = -np.ones((len(counts), num_thresholds, len(coco_match.REC_THRS), num_classes))
        positives = counts @ self.positives  # (B, K) ground truths that count
        most = counts.max(axis=0, initial=0)  # (I,) the most copies of an image in any replicate
        for k in range(num_classes):
            has = np.flatnonzero(positives[:, k] > 0)
            rows, copy = self._accumulation_order(k, most)
            step = max(1, _BLOCK_ELEMENTS // max(1, len(rows)))
            for lo in range(0, len(has), step):
                b = has[lo:lo + step]
                prec[b, :, :, k] = self._weighted_precision(rows, copy, counts[b], positives[b, k])
        # summarize's mean per replicate, over the same entries in the same order as `ap`
        return np.array([self._summarize(p) for p in prec]).reshape(len(counts), 2)

    def _accumulation_order(self, k: int, most: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ``k``'s detections in a replicate's accumulation order with each image's copies merged: falling
        score, then image, then rank (a replicate's stable sort of its draw-ordered copies). A run of detections
        of one image with one score is the exception: its copies interleave (copy 0's run, copy 1's, ...), so it
        is written out ``most[image]`` times, each ``copy`` c present in a replicate that draws the image more than
        c times. Returns the rows and their copy (-1: one entry weighted by the draw count)."""
        lo, hi = np.searchsorted(self.category, [k, k + 1])
        rows = np.arange(lo, hi)
        rows = rows[np.lexsort((rows, self.image[rows], -self.score[rows]))]
        score, image = self.score[rows], self.image[rows]
        tied = np.zeros(len(rows), bool)
        tied[1:] = (score[1:] == score[:-1]) & (image[1:] == image[:-1])
        if not tied.any():
            return rows, np.full(len(rows), -1)
        starts = np.flatnonzero(~tied)  # runs of one image and score
        ends = np.append(starts[1:], len(rows))
        out_rows, out_copy = [], []
        for a, e in zip(starts, ends):
            if e - a == 1:
                out_rows.append(rows[a:e])
                out_copy.append(np.full(1, -1))
            else:
                n = int(most[image[a]])
                out_rows.append(np.tile(rows[a:e], n))
                out_copy.append(np.repeat(np.arange(n), e - a))
        return np.concatenate(out_rows), np.concatenate(out_copy)

    def _weighted_precision(self, rows: np.ndarray, copy: np.ndarray, counts: np.ndarray, positives: np.ndarray
                            ) -> np.ndarray:
        """``(B, T, R)`` one class's interpolated precision on B replicates: ``rows``, ``copy`` its entries in
        accumulation order (`_accumulation_order`), ``counts`` ``(B, I)`` the draws, ``positives`` ``(B,)`` > 0 its
        ground truths that count. The cumulative true positives and counted detections (matched or not, not
        ignored) are read at the true positives only: past one, precision only falls until the next."""
        drawn = counts[:, self.image[rows]]  # (B, E)
        weight = np.where(copy < 0, drawn, drawn > copy)
        kept = ~self.ignored[:, rows]
        same_kept = bool((kept == kept[:1]).all())  # no threshold-dependent ignores: one cumulation serves all
        counted = _cumulate(weight * kept[0]) if same_kept else None
        need = _hits_needed(positives)
        out = np.empty((len(counts), len(self.iou_thresholds), len(coco_match.REC_THRS)))
        for t in range(len(self.iou_thresholds)):
            at = np.flatnonzero(self.matched[t, rows] & kept[t])
            upto = counted if same_kept else _cumulate(weight * kept[t])
            out[:, t] = _interpolated(_cumulate(weight[:, at]), upto[:, at], need)
        return out


def _cumulate(a: np.ndarray) -> np.ndarray:
    """Cumulative sums along the rows of an integer array (exact in any order)."""
    return np.cumsum(a, axis=1, dtype=np.int64)


def _hits_needed(positives: np.ndarray) -> np.ndarray:
    """``(B, R)`` per replicate with ``positives`` ``(B,)`` > 0 ground truths, the least k whose recall k / P (the
    float `coco_match.precision_recall` computes) reaches each threshold of `coco_match.REC_THRS`: at most P."""
    thr, pos = coco_match.REC_THRS[None, :], positives.astype(np.float64)[:, None]
    need = np.ceil(thr * pos)  # within one of the least k: the product rounds
    need = np.where((need - 1) / pos >= thr, need - 1, need)
    return np.where(need / pos < thr, need + 1, need).astype(np.int64)


def _interpolated(tp: np.ndarray, counted: np.ndarray, need: np.ndarray) -> np.ndarray:
    """``(B, R)`` `coco_match.precision_recall`'s interpolated precision from each replicate's cumulative true
    positives ``tp`` and counted detections ``counted`` ``(B, J)`` (integers) at its true positives: the same floats
    (tp / (fp + tp + eps), made monotone from the right) read where recall first reaches each threshold, found on
    the integers (``need``: `_hits_needed`), 0 past the highest recall."""
    num_b, num_j = tp.shape
    if not num_j:
        return np.zeros(need.shape)
    pr = np.maximum.accumulate((tp / (counted + np.spacing(1)))[:, ::-1], axis=1)[:, ::-1]
    # where each replicate's true positives first reach each need: one search over the rows laid end to end, each
    # row lifted above the one before (integers, so the lift is exact)
    lift = (np.arange(num_b, dtype=np.int64) * (max(int(tp.max()), int(need.max())) + 1))[:, None]
    found = np.searchsorted((tp + lift).ravel(), (need + lift).ravel()).reshape(need.shape)
    index = found - np.arange(num_b)[:, None] * num_j
    out = np.zeros(index.shape)
    valid = index < num_j
    out[valid] = pr[np.nonzero(valid)[0], index[valid]]
    return out


def _mean_existing(p: np.ndarray) -> float:
    """summarize's mean of the precision entries that exist (> -1); NaN where none does."""
    p = p[p > -1]
    return float(p.mean()) if p.size else float("nan")

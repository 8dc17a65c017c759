"""COCO AP on bootstrap replicates of the evaluated images, from one `coco_match` evaluation (the study's AP claims,
`dhanalysis.study.evidence`).

A replicate draws the images with replacement (`bootstrap.replicate_counts`, `bootstrap.positions_of`); its AP is
COCOeval's on a dataset that holds each drawn image as often as it was drawn, the copies in draw order. COCOeval
matches within an image, so one matching serves every copy; only the accumulation is redone per replicate: each
class's evaluated detections of the drawn images, concatenated in draw order (an image's own in rank order), sorted by
falling score with a stable sort and read by `coco_match.precision_recall`, the accumulation `coco_match.evaluate`
itself runs. A replicate's AP is thus pycocotools' on the copied images (tests/test_bootstrap.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dhanalysis.metrics import coco_match


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
        prec = self.precision(positions)
        at_50 = self.iou_thresholds == 0.5

        def mean(p: np.ndarray) -> float:
            p = p[p > -1]
            return float(p.mean()) if p.size else float("nan")

        return mean(prec), mean(prec[at_50] if at_50.any() else prec[:1])

"""Every headline number of one COCO results file on bootstrap replicates of its images — COCO's AP and AR, TIDE's
ΔAPs, the score–IoU alignment measures, D-ECE and oLRP — each from one matching kept as arrays.

A number measured on a few hundred images is an estimate, and two detectors compared on them differ partly by which
images were drawn. Images are the sampled unit (objects of one image share its clutter and scale), so a replicate
draws the ground truth's images with replacement (`bootstrap.replicate_counts`) and recomputes every metric as if the
drawn images were the dataset, an image drawn k times counting k times. Matching again per replicate would cost a
full evaluation each time; it is not needed, because every matching here is per image (COCOeval's greedy matching
within an image and class, TIDE's within an image, the alignment measures' objects within an image): a replicate is
a weighting of each image's matched detections and ground truths by the image's count.

- **COCO AP, AP50, AP75, APs / APm / APl, AR100** (`coco_match`'s evaluation: IoU 0.50:0.95, area ranges all /
  small / medium / large, 100 detections per image and class). Per class, the evaluated detections stay in COCOeval's
  order (falling score, then image, then rank), each weighted by its image's count; the cumulated true and false
  positives are weighted cumulative sums. The interpolated precision at a recall threshold is the largest precision
  at or after the first true positive that reaches it, and the copies of a repeated detection are adjacent (equal
  scores), so reading the curve at the true positives alone, each at its last copy, gives COCOeval's arrays on the
  resampled dataset (tests: pycocotools on the dataset with the drawn images copied under new ids). Only where two
  detections of different images have exactly equal scores could the copies' new ids order them otherwise.
- **TIDE's ΔAP** of each error: the curves of `tide.tide_curves` (the detector, each error fixed, perfect precision,
  perfect recall), each a ranked list of hits, weighted the same way; TIDE's mean over classes with positives or
  detections in the replicate; main ΔAPs floored at 0 as TIDE floors them.
- **Alignment measures** (`measures`): the per-image sums of the object rows; a replicate is ``counts @ sums``.
- **D-ECE** at IoU 0.5 (`calibration`, 10 equal-width bins, every class pooled): per-image bin sums of n, Σ score
  and Σ TP; D-ECE = Σ_b |Σ TP_b − Σ score_b| / N.
- **moLRP** at τ 0.5 (`lrp`): per class, weighted cumulative TP / FP / localisation error along the falling scores,
  LRP read at each distinct score, its minimum (and 1, keeping nothing) taken per class; the mean over the classes
  with ground truth in the replicate.

The point values (every image once) are the `detections` analysis's own (`coco_match`, `tide.tide_breakdown`,
`lrp.lrp_table`), so a value here is the one its tables report; D-ECE and the alignment measures equal
`calibration.detection_ece` and `measures.results_measures` up to float rounding, their sums taken in an order of
the detections' values rather than of the file, so that a reordered file gives the same bits and a detector
compared with itself differs by exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dhanalysis.metrics import calibration, coco_match, detections, lrp, measures, threshold_metrics, tide
from dhanalysis.stats.bootstrap import DEFAULT_REPLICATES, interval, replicate_counts
from dhanalysis.vocab import ALL_SIZES

CHUNK_CELLS = 1 << 22  # replicates × detections held at once (float64: 32 MiB per array)


@dataclass(frozen=True)
class Metric:
    """One headline number: its name in the tables, its family (how the figure groups it) and its direction."""

    name: str
    family: str
    higher_is_better: bool


COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
ALIGNMENT_METRICS = ("pooled_pcc", "positive_pcc", "object_spearman", "object_kendall", "nms_gap", "nms_near_best")
DECE_METRIC, OLRP_METRIC = "d_ece_50", "olrp"
# the metrics of every table here, in the order they are listed and drawn
METRICS: tuple[Metric, ...] = (
    *(Metric(m, "coco", True) for m in COCO_METRICS),
    *(Metric(f"tide_{e}", "tide", False) for e in (*tide.MAIN_ERRORS, *tide.SPECIAL_ERRORS)),
    *(Metric(m, "alignment", m != "nms_gap") for m in ALIGNMENT_METRICS),
    Metric(DECE_METRIC, "calibration", False),
    Metric(OLRP_METRIC, "lrp", False),
)
INTERVAL_COLUMNS = ("metric", "family", "higher_is_better", "value", "ci_low", "ci_high", "n_images")
LRP_IOU = lrp.LRP_TAU
DECE_IOU = 0.5


# ---------------------------------------------------------------------------------------------------- curves
def _needed(positives: np.ndarray, thresholds: np.ndarray, ceiling: int) -> np.ndarray:
    """``(P, R)`` the least true-positive count m with m / positives >= threshold, in float division as COCOeval's
    and TIDE's recall is computed (so a count reaches a threshold exactly when their recall does); ``ceiling`` where
    there are no positives or m would pass it (never reached)."""
    p = np.asarray(positives, np.float64)[:, None]
    thr = np.asarray(thresholds, np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.ceil(thr * p)  # within one of the answer: fix it by the division itself, in both directions
        m = np.where((m >= 1) & ((m - 1) / p >= thr), m - 1, m)
        m = np.where(m / p < thr, m + 1, m)
    m = np.where(p > 0, m, ceiling)
    return np.minimum(m, ceiling).astype(np.int64)


def precision_sums(tp: np.ndarray, counted: np.ndarray, positives: np.ndarray, thresholds: np.ndarray,
                   eps: float = 0.0) -> np.ndarray:
    """``(...)`` the sum over recall thresholds of the interpolated precision of weighted curves, read at their
    true positives.

    ``tp`` ``(..., n)``: each curve's cumulated (weighted) true positives at its n true positives, in rank order
    (entries repeating the last one are allowed: they add no point); ``counted`` ``(..., n)``: the cumulated true
    plus false positives there; ``positives`` ``(...)``: the ground truths that count. Precision is
    tp / (counted + eps) (COCOeval: eps = ``np.spacing(1)``; TIDE: 0), its envelope taken from the end; a threshold
    reads it at the first true positive whose recall reaches it, 0 where none does (module docstring). Each true
    positive j gathers the thresholds first reached there: those whose needed count lies in (tp_{j−1}, tp_j].
    """
    if tp.shape[-1] == 0:
        return np.zeros(tp.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):  # nothing counted yet (undrawn entries): precision 0
        precision = np.where(counted > 0, tp / (counted + eps), 0.0)
    envelope = np.maximum.accumulate(precision[..., ::-1], axis=-1)[..., ::-1]
    reached = tp.astype(np.int64)  # whole counts: the weights are draw counts
    top = int(reached.max()) + 1
    values, which = np.unique(np.asarray(positives, np.float64), return_inverse=True)
    need = _needed(values, thresholds, top)  # (P, R): one row per distinct number of positives
    hist = np.zeros((len(values), top + 1))
    np.add.at(hist, (np.repeat(np.arange(len(values)), need.shape[1]), need.ravel()), 1.0)
    first_reached = np.cumsum(hist, axis=1)  # [p, c]: thresholds whose needed count is <= c
    got = first_reached[which.reshape(np.shape(positives))[..., None], reached]
    got[..., 1:] -= got[..., :-1].copy()
    return (envelope * got).sum(axis=-1)


def _padded(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(L, n)`` sorted position lists padded by repeating their last entry (0 when empty), and which are real."""
    n = max((len(x) for x in lists), default=0)
    out = np.zeros((len(lists), n), np.int64)
    real = np.zeros((len(lists), n), bool)
    for i, x in enumerate(lists):
        out[i, :len(x)] = x
        out[i, len(x):] = x[-1] if len(x) else 0
        real[i, :len(x)] = True
    return out, real


def _along(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values`` ``(B, L, m)`` read at ``index`` ``(L, n)`` along the last axis: ``(B, L, n)``."""
    return np.take_along_axis(values, np.broadcast_to(index, (values.shape[0], *index.shape)), axis=2)


def _chunks(counts: np.ndarray, width: int):
    """Rows of ``counts`` in chunks of at most `CHUNK_CELLS` / ``width`` replicates."""
    step = max(1, CHUNK_CELLS // max(width, 1))
    for start in range(0, len(counts), step):
        yield counts[start:start + step]


# ---------------------------------------------------------------------------------------------------- COCO AP / AR
@dataclass
class _AreaCurves:
    """One class's curves under one area range, one per IoU threshold: its detections that count at some threshold
    (in COCOeval's order; the ones ignored at every threshold add nothing and are left out), where each curve's true
    positives are, and where its ignored detections are (few: counted at another threshold), with how many of those
    precede each true positive."""

    image: np.ndarray  # (D,) image positions
    hits: np.ndarray  # (T, h) padded
    hit_real: np.ndarray  # (T, h)
    ignored: np.ndarray  # (T, g) padded
    ignored_real: np.ndarray  # (T, g)
    before: np.ndarray  # (T, h) how many of ``ignored`` precede each hit


@dataclass
class CocoCurves:
    """COCOeval's matching of one results file as curves per (class, area range) (`_AreaCurves`; None where the
    class has no detection that counts there), and the ground truths that count per area range, image and class."""

    curves: list[list[_AreaCurves | None]]  # [class][area]
    positives: np.ndarray  # (A, I, K)
    iou_thresholds: np.ndarray
    areas: tuple[str, ...]

    @classmethod
    def from_evaluation(cls, ev: coco_match.Evaluation, gt: coco_match.Boxes, dt: coco_match.Boxes) -> CocoCurves:
        p = ev.params
        ids, cats = np.asarray(p.imgIds, np.int64), np.asarray(p.catIds, np.int64)
        img, cat = np.searchsorted(ids, dt.image), np.searchsorted(cats, dt.category)
        rows = np.flatnonzero(ev.evaluated)
        order = rows[np.lexsort((ev.rank[rows], img[rows], -dt.score[rows], cat[rows]))]  # COCOeval's accumulate
        bounds = np.searchsorted(cat[order], np.arange(len(cats) + 1))
        matched = ev.dt_match[:, :, order] != 0  # (A, T, D)
        ignored = ev.dt_ignore[:, :, order]
        tp = matched & ~ignored
        curves = []
        for k in range(len(cats)):
            s, e = bounds[k], bounds[k + 1]
            per_area: list[_AreaCurves | None] = []
            for a in range(len(p.areaRng)):
                keep = np.flatnonzero(~ignored[a, :, s:e].all(axis=0))
                if not len(keep):
                    per_area.append(None)
                    continue
                hits = [np.flatnonzero(x) for x in tp[a, :, s:e][:, keep]]
                left_out = [np.flatnonzero(x) for x in ignored[a, :, s:e][:, keep]]
                hit_pos, hit_real = _padded(hits)
                ignored_pos, ignored_real = _padded(left_out)
                before, _ = _padded([np.searchsorted(g, h) for g, h in zip(left_out, hits)])
                per_area.append(_AreaCurves(img[order[s:e]][keep], hit_pos, hit_real, ignored_pos, ignored_real,
                                            before))
            curves.append(per_area)
        g_img, g_cat = np.searchsorted(ids, gt.image), np.searchsorted(cats, gt.category)
        known = np.isin(gt.image, ids) & np.isin(gt.category, cats)
        positives = np.zeros((len(p.areaRng), len(ids), len(cats)))
        for a, area_range in enumerate(p.areaRng):
            keep = known & ~coco_match.ground_truth_ignored(gt, tuple(area_range))
            np.add.at(positives[a], (g_img[keep], g_cat[keep]), 1.0)
        return cls(curves, positives, np.asarray(p.iouThrs, np.float64), tuple(p.areaRngLbl))

    def replicates(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """``(B,)`` AP, AP50, AP75, APs, APm, APl and AR100 of each replicate (``counts`` ``(B, I)``), NaN where no
        class has a ground truth that counts."""
        t = len(self.iou_thresholds)
        width = max((t * (c.hits.shape[1] + c.ignored.shape[1] + 1) + len(c.image)
                     for per_area in self.curves for c in per_area if c is not None), default=1)
        parts = [self._replicates(chunk) for chunk in _chunks(counts, width)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

    def _replicates(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        b, thresholds = len(counts), len(self.iou_thresholds)
        recall_points = coco_match.REC_THRS
        positives = np.einsum("bi,aik->bak", counts, self.positives)  # (B, A, K)
        precision_sum = np.zeros((b, len(self.areas), thresholds))
        recall_sum = np.zeros((b, thresholds))
        every = self.areas.index(ALL_SIZES)
        for k, per_area in enumerate(self.curves):
            for a, c in enumerate(per_area):
                pos = positives[:, a, k]
                if c is None or not (pos > 0).any() or not c.hits.shape[1]:
                    continue  # no ground truth that counts: left out; no detection or no hit: precision 0
                w = counts[:, c.image]
                total = np.cumsum(w, axis=1)
                tp = np.cumsum(w[:, c.hits] * c.hit_real, axis=2)  # (B, T, h)
                counted = total[:, c.hits]  # true + false positives up to each hit: all, less the ignored ones
                if c.ignored.shape[1]:
                    ignored = np.zeros((b, thresholds, c.ignored.shape[1] + 1))
                    np.cumsum(w[:, c.ignored] * c.ignored_real, axis=2, out=ignored[:, :, 1:])
                    counted -= _along(ignored, c.before)
                pos_t = np.broadcast_to(pos[:, None], (b, thresholds))
                sums = precision_sums(tp, counted, pos_t, recall_points, np.spacing(1))
                has = pos[:, None] > 0
                precision_sum[:, a] += np.where(has, sums, 0.0)
                if a == every:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        recall_sum += np.where(has, tp[:, :, -1] / pos[:, None], 0.0)
        classes = (positives > 0).sum(axis=2)  # (B, A)
        r = len(recall_points)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {"AP": precision_sum[:, every].sum(axis=1) / (classes[:, every] * thresholds * r)}
            for name, iou in (("AP50", 0.5), ("AP75", 0.75)):
                t = int(np.flatnonzero(np.isclose(self.iou_thresholds, iou))[0])
                out[name] = precision_sum[:, every, t] / (classes[:, every] * r)
            for name, label in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
                a = self.areas.index(label)
                out[name] = precision_sum[:, a].sum(axis=1) / (classes[:, a] * thresholds * r)
            out["AR100"] = recall_sum.sum(axis=1) / (classes[:, every] * thresholds)
        return out


# ---------------------------------------------------------------------------------------------------- TIDE
TIDE_CURVES = ("base", *tide.MAIN_ERRORS, *tide.SPECIAL_ERRORS)  # the curves of `tide.tide_curves`, in this order


@dataclass
class _TideClass:
    """One class's entries in each of TIDE's curves, ranked (padded to one length), and where its hits are."""

    entries: np.ndarray  # (C, e) image positions, padded
    entry_real: np.ndarray  # (C, e)
    hits: np.ndarray  # (C, h) positions in ``entries``, padded
    hit_real: np.ndarray  # (C, h)


@dataclass
class TideCurves:
    """`tide.tide_curves` of one results file as per-class ranked entries (`_TideClass`), with each curve's entries
    and positives per image and class."""

    classes: list[_TideClass]
    entries: np.ndarray  # (C, I, K)
    positives: np.ndarray  # (C, I, K)

    @classmethod
    def from_match(cls, m: tide.TideMatch, det_image: np.ndarray, gt_image: np.ndarray, classes: np.ndarray,
                   num_images: int) -> TideCurves:
        """``det_image``: the image position of each of the match's detections; ``gt_image``: of each of its ground
        truths; ``classes``: the category ids, sorted."""
        curves = tide.tide_curves(m)
        gt_class = np.searchsorted(classes, m.gt_class)
        k = len(classes)
        entries = np.zeros((len(TIDE_CURVES), num_images, k))
        positives = np.zeros_like(entries)
        per_class: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(k)]
        for i, name in enumerate(TIDE_CURVES):
            curve = curves[name]
            c = np.searchsorted(classes, curve.cls)
            order = np.lexsort((np.arange(len(c)), -np.asarray(curve.score, np.float64), c))  # TIDE's stable sort
            bounds = np.searchsorted(c[order], np.arange(k + 1))
            images = det_image[curve.entries][order]
            hits = np.asarray(curve.hit, bool)[order]
            np.add.at(entries[i], (images, c[order]), 1.0)
            np.add.at(positives[i], (gt_image[curve.counted], gt_class[curve.counted]), 1.0)
            for j in range(k):
                per_class[j].append((images[bounds[j]:bounds[j + 1]], np.flatnonzero(hits[bounds[j]:bounds[j + 1]])))
        out = []
        for lists in per_class:
            entry_pos, entry_real = _padded([e for e, _ in lists])
            hit_pos, hit_real = _padded([h for _, h in lists])
            out.append(_TideClass(entry_pos, entry_real, hit_pos, hit_real))
        return cls(out, entries, positives)

    def replicates(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """``(B,)`` TIDE's ΔAP of every error type per replicate, main errors floored at 0 as TIDE floors them."""
        width = max((len(TIDE_CURVES) * (c.entries.shape[1] + c.hits.shape[1]) for c in self.classes), default=1)
        aps = np.concatenate([self._mean_ap(chunk) for chunk in _chunks(counts, width)], axis=0) if len(counts) \
            else np.zeros((0, len(TIDE_CURVES)))
        base = aps[:, 0]
        out = {}
        for i, name in enumerate(TIDE_CURVES[1:], 1):
            delta = aps[:, i] - base
            out[f"tide_{name}"] = np.maximum(delta, 0.0) if name in tide.MAIN_ERRORS else delta
        return out

    def _mean_ap(self, counts: np.ndarray) -> np.ndarray:
        """``(B, C)`` TIDE's mAP of every curve per replicate (`tide.mean_ap` on the resampled images): the mean over
        the classes with positives or entries, a class AP 0 without either."""
        pos = np.einsum("bi,cik->bck", counts, self.positives)
        det = np.einsum("bi,cik->bck", counts, self.entries)
        ap = np.zeros_like(pos)
        r = len(tide.RECALL_POINTS)
        for k, c in enumerate(self.classes):
            scored = (pos[:, :, k] > 0) & (det[:, :, k] > 0)
            if not scored.any() or not c.hits.shape[1]:
                continue
            w = counts[:, c.entries] * c.entry_real  # (B, C, e)
            total = np.cumsum(w, axis=2)
            tp = np.cumsum(_along(w, c.hits) * c.hit_real, axis=2)
            sums = precision_sums(tp, _along(total, c.hits), pos[:, :, k], tide.RECALL_POINTS)
            ap[:, :, k] = np.where(scored, sums / r, 0.0)
        included = (det > 0) | (pos != 0)
        n = included.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, (ap * included).sum(axis=2) / n, 0.0)


def tide_ground_truth_images(gt: dict, image_ids: np.ndarray) -> np.ndarray:
    """The image position (in sorted ``image_ids``) of each ground truth of TIDE's match, in its order: image by image
    in the ground truth's image order, each image's non-crowd annotations in file order (`tide.tide_match`)."""
    anns = gt["annotations"]
    order_of = {im["id"]: i for i, im in enumerate(gt["images"])}
    image = np.asarray([a["image_id"] for a in anns], np.int64)
    crowd = np.asarray([bool(a.get("iscrowd") or 0) for a in anns], bool)
    keep = np.flatnonzero(~crowd)
    keep = keep[np.argsort([order_of[int(i)] for i in image[keep]], kind="stable")]
    return np.searchsorted(image_ids, image[keep])


# ---------------------------------------------------------------------------------------------------- D-ECE, oLRP
def _dece_sums(o: coco_match.Outcomes, det_image: np.ndarray, num_images: int) -> np.ndarray:
    """``(I, 3 · bins)`` per image and D-ECE bin (10 equal-width, netcal's clipping and edges): n, Σ score, Σ TP."""
    eps = np.finfo(np.float64).eps
    score = np.clip(o.score, eps, 1.0 - eps)
    bins = calibration.bin_index(score, calibration.bin_edges(score, calibration.DECE_BINS, calibration.EQUAL_WIDTH))
    cell = det_image[o.rows] * calibration.DECE_BINS + bins
    order = np.lexsort((o.tp, score, cell))  # summed in an order of values, not of the file: a reordered file
    score, cell, tp = score[order], cell[order], o.tp[order]  # gives the same bits
    size = num_images * calibration.DECE_BINS
    parts = [np.bincount(cell, weights=v, minlength=size) for v in (np.ones(len(score)), score, tp.astype(float))]
    return np.stack(parts, axis=1).reshape(num_images, calibration.DECE_BINS * 3)


def dece_of_sums(sums: np.ndarray) -> np.ndarray:
    """D-ECE from totals of `_dece_sums` ``(..., 3 · bins)``: Σ_b |Σ TP_b − Σ score_b| / N (NaN without detections)."""
    s = sums.reshape(*sums.shape[:-1], calibration.DECE_BINS, 3)
    n = s[..., 0].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.abs(s[..., 2] - s[..., 1]).sum(axis=-1) / n, np.nan)


@dataclass
class LrpCurves:
    """The counted detections at IoU τ sorted by (class, falling score), with what oLRP cumulates, and where each
    class's candidate thresholds (the last detection of each score) are."""

    image: np.ndarray
    hit: np.ndarray
    loc: np.ndarray  # 1 − IoU for a true positive, 0 otherwise
    start: np.ndarray  # each entry's class start
    last: np.ndarray  # candidate positions
    candidate_class: np.ndarray  # the class of each candidate
    first: np.ndarray  # each class's first candidate among ``last``
    positives: np.ndarray  # (I, K)

    @classmethod
    def from_outcomes(cls, o: coco_match.Outcomes, det_image: np.ndarray, positives: np.ndarray) -> LrpCurves:
        order = np.lexsort((-o.score, o.category))  # `lrp.optimal_lrp`'s order
        c, s = o.category[order], o.score[order]
        hit = o.tp[order]
        n = len(c)
        last = np.flatnonzero(np.r_[(c[1:] != c[:-1]) | (s[1:] != s[:-1]), True]) if n else np.zeros(0, np.int64)
        first = np.flatnonzero(np.r_[True, c[last][1:] != c[last][:-1]]) if len(last) else np.zeros(0, np.int64)
        return cls(det_image[o.rows][order], hit, np.where(hit, 1.0 - o.iou[order], 0.0),
                   np.searchsorted(c, c, side="left"), last, c[last], first, positives)

    def replicates(self, counts: np.ndarray, tau: float = LRP_IOU) -> np.ndarray:
        """``(B,)`` moLRP per replicate: oLRP per class (LRP's minimum over thresholds, 1 keeping nothing), the mean
        over the classes with ground truth that counts in the replicate (NaN without any)."""
        parts = [self._replicates(chunk, tau) for chunk in _chunks(counts, 4 * max(len(self.image), 1))]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _replicates(self, counts: np.ndarray, tau: float) -> np.ndarray:
        b, k = len(counts), self.positives.shape[1]
        positives = counts @ self.positives
        olrp = np.ones((b, k))
        if len(self.last):
            w = counts[:, self.image]

            def within(values: np.ndarray) -> np.ndarray:  # cumulated within the class, at each candidate
                total = np.zeros((b, values.shape[1] + 1))
                np.cumsum(values, axis=1, out=total[:, 1:])
                return total[:, self.last + 1] - total[:, self.start[self.last]]

            tp, kept, loc = within(w * self.hit), within(w), within(w * self.loc)
            with np.errstate(invalid="ignore", divide="ignore"):  # a class without positives: left out below
                value = lrp.lrp(tp, kept - tp, loc, positives[:, self.candidate_class], tau)
            best = np.minimum.reduceat(np.where(np.isnan(value), np.inf, value), self.first, axis=1)
            olrp[:, self.candidate_class[self.first]] = np.minimum(best, 1.0)
        has = positives > 0
        n = has.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.where(has, olrp, 0.0).sum(axis=1) / n, np.nan)


# ---------------------------------------------------------------------------------------------------- one file
@dataclass
class ResampledFile:
    """One results file ready for the bootstrap: its point values (every image once) and its matchings as arrays;
    `replicates` gives every metric of `METRICS` on any draws of its images."""

    image_ids: np.ndarray  # (I,) the ground truth's images, sorted: the positions draws count
    values: dict[str, float]
    coco: CocoCurves
    tide: TideCurves
    alignment: np.ndarray  # (I, C) per-image sums of the alignment measures' object rows
    dece: np.ndarray  # (I, 3 · bins)
    lrp: LrpCurves

    def replicates(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """metric -> ``(B,)`` its value on each replicate; ``counts`` ``(B, I)``: how often each image is drawn."""
        counts = np.asarray(counts, np.float64)
        if counts.ndim != 2 or counts.shape[1] != len(self.image_ids):
            raise ValueError(f"counts must be (replicates, {len(self.image_ids)} images), got {counts.shape}")
        if not len(counts):
            return {m.name: np.zeros(0) for m in METRICS}
        found = {**self.coco.replicates(counts), **self.tide.replicates(counts)}
        aligned = measures.measures_of_sums(counts @ self.alignment)
        found.update({m: aligned[m][1] for m in ALIGNMENT_METRICS})
        found[DECE_METRIC] = dece_of_sums(counts @ self.dece)
        found[OLRP_METRIC] = self.lrp.replicates(counts)
        return {m.name: np.asarray(found[m.name], np.float64).reshape(len(counts)) for m in METRICS}


def resample_file(inputs: detections.DetectionInputs,
                  positive_iou: float = measures.DEFAULT_POSITIVE_IOU) -> ResampledFile:
    """Match one results file once (COCOeval, TIDE, the alignment measures' objects, D-ECE's and LRP's outcomes at
    IoU 0.5) and keep what every replicate needs (module docstring). ``positive_iou``: the alignment measures'
    positives."""
    dets = inputs.detection_boxes(inputs.results["score"].to_numpy(np.float64))
    ev = detections.coco_eval(inputs, dets)  # IoU 0.50:0.95, every area range and max detections
    image_ids = np.asarray(ev.params.imgIds, np.int64)
    det_image = np.searchsorted(image_ids, dets.image)
    names = {c["id"]: c["name"] for c in inputs.gt["categories"]}
    values = dict(detections.ap_metrics(ev))
    values["AR100"] = threshold_metrics.recall_summary(threshold_metrics.average_recall(ev, names))["AR100"]

    match = tide.tide_match(inputs.results, inputs.gt)
    breakdown, _ = tide.tide_breakdown(match)
    values.update({f"tide_{r.error}": float(r.delta_ap) for r in breakdown.itertuples()})
    gt_image = tide_ground_truth_images(inputs.gt, image_ids)
    if len(gt_image) != len(match.gt_class):
        raise AssertionError("TIDE's ground truths and the annotations disagree")
    tide_curves = TideCurves.from_match(match, det_image[match.det_index], gt_image,
                                        np.asarray(ev.params.catIds, np.int64), len(image_ids))

    table = detections.detection_table(inputs, ev, tide.error_names(match, len(inputs.results)))
    # the measures' sums run in an order of the detections' values, not of the file, so that a reordered file gives
    # the same bits (and two files holding the same detections differ by exactly 0)
    canonical = np.lexsort(tuple(table[c].to_numpy() for c in ("h", "w", "y", "x", "score", "category_id",
                                                                 "image_id")))
    _, objects = measures.results_objects(table.iloc[canonical].reset_index(drop=True), ("score",),
                                          positive_iou=positive_iou)
    alignment = measures.image_measure_sums(objects, image_ids)
    point = measures.measures_of_sums(alignment.sum(axis=0))
    values.update({m: float(point[m][1]) for m in ALIGNMENT_METRICS})

    o = coco_match.outcomes(ev, inputs.gt_boxes, dets, DECE_IOU)
    dece = _dece_sums(o, det_image, len(image_ids))
    values[DECE_METRIC] = float(dece_of_sums(dece.sum(axis=0)))  # `calibration.detection_ece`'s, summed in value order
    _, olrp = lrp.lrp_table(ev, inputs.gt_boxes, dets, names, LRP_IOU)
    values[OLRP_METRIC] = olrp["olrp"]
    cats = np.asarray(ev.params.catIds, np.int64)
    gt = inputs.gt_boxes
    every = ev.params.areaRng[coco_match.area_index(ev.params)]
    counted = (~coco_match.ground_truth_ignored(gt, tuple(every)) & np.isin(gt.category, cats)
               & np.isin(gt.image, image_ids))
    positives = np.zeros((len(image_ids), len(cats)))
    np.add.at(positives, (np.searchsorted(image_ids, gt.image[counted]), np.searchsorted(cats, gt.category[counted])),
              1.0)
    o_lrp = o if np.isclose(LRP_IOU, DECE_IOU) else coco_match.outcomes(ev, inputs.gt_boxes, dets, LRP_IOU)
    return ResampledFile(image_ids, {m.name: float(values[m.name]) for m in METRICS},
                         CocoCurves.from_evaluation(ev, inputs.gt_boxes, dets), tide_curves, alignment, dece,
                         LrpCurves.from_outcomes(o_lrp, det_image, positives))


# ---------------------------------------------------------------------------------------------------- intervals
def interval_table(resampled: ResampledFile, reps: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per metric (`INTERVAL_COLUMNS`): the point value and the 95% percentile interval of its replicates
    (NaN where fewer than half the replicates have a value)."""
    rows = []
    for m in METRICS:
        lo, hi = interval(reps[m.name]) if len(reps[m.name]) else (float("nan"), float("nan"))
        rows.append({"metric": m.name, "family": m.family, "higher_is_better": m.higher_is_better,
                     "value": resampled.values[m.name], "ci_low": lo, "ci_high": hi,
                     "n_images": len(resampled.image_ids)})
    return pd.DataFrame(rows, columns=list(INTERVAL_COLUMNS))


def detector_intervals(inputs: detections.DetectionInputs, replicates: int = DEFAULT_REPLICATES, seed: int = 0,
                       positive_iou: float = measures.DEFAULT_POSITIVE_IOU) -> pd.DataFrame:
    """Every headline metric of one detector with its 95% bootstrap interval over images (`INTERVAL_COLUMNS`): the
    one-detector form of `dhanalysis.metrics.compare` (the same draws for the same number of images and seed)."""
    resampled = resample_file(inputs, positive_iou)
    counts = replicate_counts(len(resampled.image_ids), replicates, seed)
    return interval_table(resampled, resampled.replicates(counts))

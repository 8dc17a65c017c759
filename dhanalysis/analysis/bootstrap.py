"""Bootstrap over images: 95% intervals for every number a finding compares (paper claims, `findings`).

Images are the unit that was sampled (objects in one image share its clutter, its scale and the model's features),
so each bootstrap replicate draws the evaluated images with replacement and recomputes the statistic from them.
Two models compared on the same images draw the *same* images (a paired bootstrap), so the interval of a
difference reflects the variation of the difference, not of each number alone.

Models trained with several seeds add a second level (`TwoLevelDraws`): each replicate first draws the seeds with
replacement, then, for each drawn seed, the images; a difference is taken within each drawn seed (both sides trained
with that seed, on those images: paired) and averaged over the drawn seeds. The interval then covers which images
were drawn *and* which models training happened to give, and `holm` adjusts many such verdicts for multiplicity.

Everything a finding needs is a function of per-image sums, so a replicate is a weighted sum: with per-image sums
``X`` ``(N, m)`` and replicate counts ``W`` ``(B, N)`` (how often each image was drawn), ``W @ X`` gives all ``B``
replicates of the ``m`` totals at once. COCO AP is not a sum; `CocoMatches` keeps pycocotools' per-image matching
(done once) and recomputes the precision-recall accumulation of each replicate the way ``COCOeval.accumulate`` does.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from dhanalysis.analysis.stats import pcc_from_moments

DEFAULT_REPLICATES = 1000
CONFIDENCE = 0.95


def replicate_counts(num_images: int, replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> np.ndarray:
    """``(B, N)`` how often each of N images is drawn in each of B replicates (each row sums to N)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=replicates).astype(np.float64)


def interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of the finite replicates (NaN, NaN when fewer than half are finite)."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size < max(2, len(replicates) // 2):
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class TwoLevelDraws:
    """The draws of a two-level bootstrap, shared by every claim (so all differences stay paired).

    ``seeds`` ``(B, S)``: the seed position drawn for slot j of replicate b; ``counts`` ``(B, S, N)``: how often each
    of the N images is drawn for that slot. With one seed it is the one-level bootstrap over images.
    """

    seeds: np.ndarray
    counts: np.ndarray

    @classmethod
    def draw(cls, num_seeds: int, num_images: int, replicates: int = DEFAULT_REPLICATES, seed: int = 0
             ) -> TwoLevelDraws:
        rng = np.random.default_rng(seed)
        seeds = (rng.integers(0, num_seeds, size=(replicates, num_seeds)) if num_seeds > 1
                 else np.zeros((replicates, 1), dtype=np.int64))
        counts = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images),
                                 size=(replicates, num_seeds)).astype(np.float64)
        return cls(seeds, counts)

    @property
    def replicates(self) -> int:
        return self.seeds.shape[0]

    def combine(self, per_seed: list[np.ndarray]) -> np.ndarray:
        """``(B,)`` replicate values from ``per_seed[s]`` ``(B, S)`` (the statistic of seed s on the images of every
        slot): each slot takes its drawn seed's value, and the slots are averaged."""
        stacked = np.stack(per_seed)  # (S_models, B, S_slots)
        picked = np.take_along_axis(stacked, self.seeds[None], axis=0)[0]
        return picked.mean(axis=1)


def p_value(replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": twice the smaller share of replicates on either side of
    0, counted with the +1 of a Monte Carlo p-value so that it is never 0."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    below, above = np.count_nonzero(values <= 0), np.count_nonzero(values >= 0)
    return float(min(1.0, 2 * (min(below, above) + 1) / (values.size + 1)))


def holm(p_values: list[float], alpha: float = 1 - CONFIDENCE) -> list[bool]:
    """Holm's step-down rule: which of the hypotheses are rejected at family-wise error ``alpha``.

    Sort the m p-values ascending; reject the i-th smallest (1-based) while p_(i) <= alpha / (m − i + 1), and stop
    at the first that is not. NaN p-values (claims not measured) are neither counted nor rejected.
    """
    finite = [(p, i) for i, p in enumerate(p_values) if np.isfinite(p)]
    rejected = [False] * len(p_values)
    m = len(finite)
    for rank, (p, i) in enumerate(sorted(finite)):
        if p > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def pcc_of_sums(sums: np.ndarray) -> np.ndarray:
    """Pearson's r from moment columns ``(..., 6)``: n, Σx, Σx², Σs, Σs², Σxs."""
    return pcc_from_moments(*(sums[..., i] for i in range(6)))


def ratio_of_sums(sums: np.ndarray) -> np.ndarray:
    """Mean from ``(..., 2)`` columns (Σvalue, count); NaN where the count is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sums[..., 1] > 0, sums[..., 0] / sums[..., 1], np.nan)


@dataclass
class CocoMatches:
    """pycocotools' per-image matching of one detection set, kept so that AP can be recomputed on resampled images.

    ``per_cat[k]`` lists, per image position, (scores ``(D,)``, matched ``(T, D)`` bool, ignored ``(T, D)`` bool,
    non-ignored ground truths) for category k, area "all", the first 100 detections, as ``COCOeval.evaluate`` left
    them; ``image_ids`` fixes the positions.
    """

    image_ids: list[int]
    per_cat: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]]
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray

    @classmethod
    def from_results(cls, coco_gt, results: list[dict], image_ids: list[int]) -> CocoMatches:
        from pycocotools.cocoeval import COCOeval

        image_ids = sorted(int(i) for i in image_ids)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(results) if results else None
            ev = COCOeval(coco_gt, coco_dt if coco_dt is not None else coco_gt.loadRes([_dummy(coco_gt, image_ids)]),
                          "bbox")
            ev.params.imgIds = image_ids
            ev.evaluate()
        p = ev.params
        max_det = p.maxDets[-1]
        n_img, n_area = len(p.imgIds), len(p.areaRng)
        area_all = [tuple(a) for a in p.areaRng].index(tuple(p.areaRng[0]))
        per_cat = []
        for k in range(len(p.catIds)):
            rows = []
            for i in range(n_img):
                e = ev.evalImgs[k * n_area * n_img + area_all * n_img + i]
                if e is None:
                    rows.append((np.zeros(0), np.zeros((len(p.iouThrs), 0), bool), np.zeros((len(p.iouThrs), 0),
                                                                                           bool), 0))
                    continue
                scores = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
                matched = np.asarray(e["dtMatches"][:, :max_det] > 0)
                ignored = np.asarray(e["dtIgnore"][:, :max_det], dtype=bool)
                if not results:  # the placeholder detection must not count
                    scores, matched, ignored = scores[:0], matched[:, :0], ignored[:, :0]
                rows.append((scores, matched, ignored, int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))))
            per_cat.append(rows)
        return cls(image_ids, per_cat, np.asarray(p.iouThrs), np.asarray(p.recThrs))

    def precision(self, positions: np.ndarray) -> np.ndarray:
        """``(T, R, K)`` interpolated precision on the images at ``positions`` (repeats allowed); -1 where a category
        has no ground truth, as ``COCOeval.accumulate``."""
        T, R, K = len(self.iou_thresholds), len(self.recall_thresholds), len(self.per_cat)
        out = -np.ones((T, R, K))
        for k, rows in enumerate(self.per_cat):
            picked = [rows[i] for i in positions]
            npig = sum(r[3] for r in picked)
            if npig == 0:
                continue
            scores = np.concatenate([r[0] for r in picked])
            order = np.argsort(-scores, kind="mergesort")
            matched = np.concatenate([r[1] for r in picked], axis=1)[:, order]
            ignored = np.concatenate([r[2] for r in picked], axis=1)[:, order]
            tp = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
            fp = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
            for t in range(T):
                if tp.shape[1] == 0:
                    out[t, :, k] = 0.0
                    continue
                recall = tp[t] / npig
                prec = tp[t] / (tp[t] + fp[t] + np.spacing(1))
                prec = np.maximum.accumulate(prec[::-1])[::-1]  # the precision envelope
                idx = np.searchsorted(recall, self.recall_thresholds, side="left")
                q = np.zeros(R)
                valid = idx < len(prec)
                q[valid] = prec[idx[valid]]
                out[t, :, k] = q
        return out

    def ap(self, positions: np.ndarray | None = None) -> tuple[float, float]:
        """(AP over IoU 0.50:0.95, AP50) on the images at ``positions`` (default: every image once)."""
        positions = np.arange(len(self.image_ids)) if positions is None else positions
        prec = self.precision(positions)

        def mean(p: np.ndarray) -> float:
            p = p[p > -1]
            return float(p.mean()) if p.size else float("nan")

        return mean(prec), mean(prec[self.iou_thresholds == 0.5] if np.any(self.iou_thresholds == 0.5) else prec[:1])


def _dummy(coco_gt, image_ids: list[int]) -> dict:
    """One placeholder detection, because pycocotools cannot load an empty result list."""
    cat = sorted(coco_gt.getCatIds())[0]
    return {"image_id": image_ids[0], "category_id": cat, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.0}


def positions_of(counts_row: np.ndarray) -> np.ndarray:
    """Image positions of one replicate from its draw counts (image i repeated counts[i] times)."""
    return np.repeat(np.arange(len(counts_row)), counts_row.astype(np.int64))

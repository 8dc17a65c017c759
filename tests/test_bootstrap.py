"""Bootstrap intervals: AP recomputed from pycocotools' matching equals COCOeval, on every image and on a resampled
image list (duplicates included); moment sums give scipy's Pearson r; intervals cover what they should."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from scipy.stats import pearsonr

from dhanalysis.analysis.bootstrap import (CocoMatches, interval, pcc_of_sums, positions_of, ratio_of_sums,
                                           replicate_counts)
from dhanalysis.engine.evaluate import coco_ap


def fake_coco(seed: int = 0, images: int = 12, cats: int = 3):
    """A small ground truth and noisy detections of it (some misses, some false positives, jittered boxes)."""
    from pycocotools.coco import COCO

    rng = np.random.default_rng(seed)
    gt = {"images": [{"id": i + 1, "width": 200, "height": 200} for i in range(images)],
          "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(cats)], "annotations": []}
    dets = []
    for i in range(images):
        for _ in range(rng.integers(1, 5)):
            x, y = rng.uniform(0, 120, 2)
            w, h = rng.uniform(10, 70, 2)
            cat = int(rng.integers(1, cats + 1))
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": cat,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            if rng.uniform() < 0.85:
                jitter = rng.normal(0, 6, 4)
                dets.append({"image_id": i + 1, "category_id": cat, "bbox": [x + jitter[0], y + jitter[1],
                             max(w + jitter[2], 2), max(h + jitter[3], 2)], "score": float(rng.uniform(0.2, 1))})
        for _ in range(rng.integers(0, 3)):
            dets.append({"image_id": i + 1, "category_id": int(rng.integers(1, cats + 1)),
                         "bbox": [*rng.uniform(0, 150, 2), *rng.uniform(5, 50, 2)], "score": float(rng.uniform(0, 1))})
    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = gt
        coco.createIndex()
    return coco, dets


def test_ap_from_matches_equals_cocoeval_on_all_and_resampled_images():
    coco, dets = fake_coco()
    ids = sorted(coco.getImgIds())
    matches = CocoMatches.from_results(coco, dets, ids)
    summary, _ = coco_ap(coco, dets, ids)
    ap, ap50 = matches.ap()
    assert ap == pytest.approx(summary["AP"], abs=1e-12) and ap50 == pytest.approx(summary["AP50"], abs=1e-12)

    # a resampled image list = a dataset in which the drawn images appear as often as drawn: build it for COCOeval
    counts = replicate_counts(len(ids), 3, seed=5)
    for row in counts:
        positions = positions_of(row)
        assert len(positions) == len(ids) and len(set(positions)) < len(ids)  # duplicates present
        from pycocotools.coco import COCO

        copy_gt = {"images": [], "annotations": [], "categories": coco.dataset["categories"]}
        copy_dets = []
        for new_id, pos in enumerate(positions, 1):
            old = ids[pos]
            copy_gt["images"].append({"id": new_id, "width": 200, "height": 200})
            for a in coco.imgToAnns[old]:
                copy_gt["annotations"].append({**a, "id": len(copy_gt["annotations"]) + 1, "image_id": new_id})
            copy_dets += [{**d, "image_id": new_id} for d in dets if d["image_id"] == old]
        ref = COCO()
        with contextlib.redirect_stdout(io.StringIO()):
            ref.dataset = copy_gt
            ref.createIndex()
        expected, _ = coco_ap(ref, copy_dets, list(range(1, len(positions) + 1)))
        got_ap, got_ap50 = matches.ap(positions)
        assert got_ap == pytest.approx(expected["AP"], abs=1e-9)
        assert got_ap50 == pytest.approx(expected["AP50"], abs=1e-9)


def test_moment_sums_give_pearson_and_means():
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, 500)
    s = np.clip(x + rng.normal(0, 0.3, 500), 0, 1)
    sums = np.array([len(x), x.sum(), (x * x).sum(), s.sum(), (s * s).sum(), (x * s).sum()])
    assert pcc_of_sums(sums) == pytest.approx(pearsonr(x, s)[0], rel=1e-12)
    assert ratio_of_sums(np.array([s.sum(), len(s)])) == pytest.approx(s.mean())


def test_interval_covers_the_mean_of_normal_draws_and_shrinks_with_n():
    rng = np.random.default_rng(3)
    widths = []
    for n in (50, 800):
        values = rng.normal(1.0, 1.0, n)
        w = replicate_counts(n, 2000, seed=4)
        lo, hi = interval(w @ values / n)
        assert lo < 1.0 < hi or abs(values.mean() - 1.0) > 2.5 / np.sqrt(n)
        widths.append(hi - lo)
        assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.25)  # the textbook interval of a mean
    assert widths[1] < widths[0] / 3

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


def test_holm_rejects_what_statsmodels_rejects():
    from statsmodels.stats.multitest import multipletests

    from dhanalysis.analysis.bootstrap import holm

    rng = np.random.default_rng(4)
    for _ in range(200):
        m = int(rng.integers(1, 12))
        p = np.where(rng.random(m) < 0.5, rng.random(m) * 0.02, rng.random(m)).tolist()
        want = multipletests(p, alpha=0.05, method="holm")[0].tolist()
        assert holm(p) == want
    assert holm([0.01, float("nan"), 0.03]) == multipletests([0.01, 0.03], 0.05, "holm")[0].tolist()[:1] + [False] \
        + multipletests([0.01, 0.03], 0.05, "holm")[0].tolist()[1:]


def test_two_level_draws_pick_the_drawn_seed_and_average_the_slots():
    from dhanalysis.analysis.bootstrap import TwoLevelDraws, p_value

    draws = TwoLevelDraws.draw(num_seeds=3, num_images=5, replicates=400, seed=1)
    assert draws.seeds.shape == (400, 3) and draws.counts.shape == (400, 3, 5)
    assert (draws.counts.sum(-1) == 5).all() and set(np.unique(draws.seeds)) == {0, 1, 2}
    # a statistic that is the seed's own constant: each replicate is the mean of the drawn seeds' constants
    per_seed = [np.full((400, 3), float(v)) for v in (10.0, 20.0, 40.0)]
    want = np.array([np.mean([(10.0, 20.0, 40.0)[s] for s in row]) for row in draws.seeds])
    np.testing.assert_allclose(draws.combine(per_seed), want)
    # slot j of seed s reads that slot's own image draw
    x = np.arange(5, dtype=float)
    per_seed = [draws.counts @ (x * (s + 1)) for s in range(3)]
    want = np.array([np.mean([draws.counts[b, j] @ (x * (draws.seeds[b, j] + 1)) for j in range(3)])
                     for b in range(400)])
    np.testing.assert_allclose(draws.combine(per_seed), want)
    # seed noise widens the interval: three seeds far apart give an interval wider than one seed's
    one = TwoLevelDraws.draw(1, 5, 400, 1).combine([np.full((400, 1), 10.0)])
    assert np.ptp(one) == 0 and np.ptp(draws.combine([np.full((400, 3), float(v)) for v in (10, 20, 40)])) > 10
    assert p_value(np.array([1.0, 2.0, 3.0])) == 2 * 1 / 4 and p_value(np.array([-1.0, 1.0])) == 1.0

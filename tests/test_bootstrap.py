"""Bootstrap intervals: AP recomputed per replicate from one matching (`metrics.resampled_ap`) equals pycocotools'
COCOeval, on every image and on a resampled image list (duplicates included), also on files with crowds, every size
group and more than 100 detections of an image and class; moment sums give scipy's Pearson r; intervals cover what
they should; the seed × image t interval reduces to known intervals where it must; the findings' AP replicates
resample the AP images.

The coverage of the findings' interval method is measured in tests/test_interval_coverage.py."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from scipy.stats import pearsonr

from dhanalysis.metrics.resampled_ap import CocoMatches
from dhanalysis.stats.bootstrap import interval, pcc_of_sums, positions_of, ratio_of_sums, replicate_counts


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


def corner_cases(seed: int = 0):
    """test_coco_match's generated file (crowds, every size group, more than 100 detections of one image and class,
    images without objects or detections) as a pycocotools COCO, its detections and the images evaluated."""
    from test_coco_match import sparse_case

    gt, dets, image_ids = sparse_case(seed)
    return as_coco(gt), dets, sorted(image_ids)


def as_coco(gt: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = gt
        coco.createIndex()
    return coco


def cocoeval_ap(coco, dets: list[dict], image_ids: list[int]) -> tuple[float, float]:
    """pycocotools' (AP, AP50): COCOeval's stats[0:2]."""
    from test_coco_match import pycocotools_eval

    ev = pycocotools_eval(coco.dataset, dets, image_ids)
    return float(ev.stats[0]), float(ev.stats[1])


@pytest.mark.parametrize("case", ["noisy", "corner_cases"])
def test_ap_from_matches_equals_cocoeval_on_all_and_resampled_images(case):
    if case == "noisy":
        coco, dets = fake_coco()
        ids = sorted(coco.getImgIds())
    else:
        coco, dets, ids = corner_cases()
    matches = CocoMatches.from_results(coco, dets, ids)
    want = cocoeval_ap(coco, dets, ids)
    assert matches.ap() == pytest.approx(want, abs=1e-12)

    # a resampled image list = a dataset in which the drawn images appear as often as drawn: build it for COCOeval
    counts = replicate_counts(len(ids), 3, seed=5)
    for row in counts:
        positions = positions_of(row)
        assert len(positions) == len(ids) and len(set(positions)) < len(ids)  # duplicates present
        by_image = {i: [a for a in coco.dataset["annotations"] if a["image_id"] == i] for i in ids}
        copy_gt = {"images": [], "annotations": [], "categories": coco.dataset["categories"]}
        copy_dets = []
        for new_id, pos in enumerate(positions, 1):
            old = ids[pos]
            copy_gt["images"].append({"id": new_id, "width": 200, "height": 200})
            for a in by_image[old]:
                copy_gt["annotations"].append({**a, "id": len(copy_gt["annotations"]) + 1, "image_id": new_id})
            copy_dets += [{**d, "image_id": new_id} for d in dets if d["image_id"] == old]
        expected = cocoeval_ap(as_coco(copy_gt), copy_dets, list(range(1, len(positions) + 1)))
        assert matches.ap(positions) == pytest.approx(expected, abs=1e-12)


def tied_case(seed: int = 1):
    """fake_coco with ties inside images: a detection's exact duplicate (a false positive once the object is
    taken) and a far-off copy, both at the original's score, so true and false positives of one image share a
    score (their copies interleave in a replicate)."""
    coco, dets = fake_coco(seed, images=10)
    extra = []
    for d in dets[::3]:
        x, y, w, h = d["bbox"]
        extra += [dict(d), {**d, "bbox": [min(x + 90, 190), min(y + 90, 190), w / 3 + 1, h / 3 + 1]}]
    return coco, dets + extra


@pytest.mark.parametrize("case", ["noisy", "corner_cases", "tied"])
def test_ap_of_every_replicate_at_once_equals_one_replicate_at_a_time_to_the_bit(case):
    """`ap_replicates` weighs detections by their image's draw count instead of copying images: the same floats as
    `ap` on each replicate's copied images (which equals COCOeval, above), crowds (threshold-dependent ignores),
    ties inside an image, images drawn many times and classes absent from a replicate included."""
    if case == "corner_cases":
        coco, dets, ids = corner_cases()
    else:
        coco, dets = fake_coco() if case == "noisy" else tied_case()
        ids = sorted(coco.getImgIds())
    matches = CocoMatches.from_results(coco, dets, ids)
    n = len(ids)
    counts = replicate_counts(n, 60, seed=3)
    one_image = np.zeros((1, n))
    one_image[0, n // 2] = n  # a single image, drawn n times
    counts = np.vstack([counts, one_image, np.ones((1, n))])
    want = np.array([matches.ap(positions_of(row)) for row in counts])
    got = matches.ap_replicates(counts)
    assert got.shape == (len(counts), 2)
    assert np.array_equal(got, want, equal_nan=True)
    if case == "tied":  # the case holds what it is named for: a tie of one image's detections, in a drawn image
        key = [(d["image_id"], d["category_id"], d["score"]) for d in dets]
        assert len(set(key)) < len(key)


def test_ap_replicates_refuses_counts_of_other_images():
    coco, dets = fake_coco()
    matches = CocoMatches.from_results(coco, dets, sorted(coco.getImgIds()))
    with pytest.raises(ValueError, match="counts must be"):
        matches.ap_replicates(np.ones((3, len(matches.image_ids) + 1)))


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

    from dhanalysis.stats.bootstrap import holm

    rng = np.random.default_rng(4)
    for _ in range(200):
        m = int(rng.integers(1, 12))
        p = np.where(rng.random(m) < 0.5, rng.random(m) * 0.02, rng.random(m)).tolist()
        want = multipletests(p, alpha=0.05, method="holm")[0].tolist()
        assert holm(p) == want
    assert holm([0.01, float("nan"), 0.03]) == multipletests([0.01, 0.03], 0.05, "holm")[0].tolist()[:1] + [False] \
        + multipletests([0.01, 0.03], 0.05, "holm")[0].tolist()[1:]


def test_seed_image_t_is_the_t_test_over_seeds_when_images_do_not_matter():
    """A statistic that is each seed's constant: the image part is 0 and the interval is the one-sample t interval
    of the seeds' values (S − 1 degrees of freedom), with scipy's t-test p-value."""
    from scipy.stats import t as student_t
    from scipy.stats import ttest_1samp

    from dhanalysis.stats.bootstrap import seed_image_t, t_interval, t_p_value

    values = np.array([0.8, 1.9, 1.2])
    estimate, se, df = (float(v) for v in seed_image_t(values, np.tile(values, (300, 1)), 100))
    assert estimate == pytest.approx(values.mean()) and df == pytest.approx(2)
    assert se == pytest.approx(values.std(ddof=1) / np.sqrt(3))
    lo, hi = t_interval(estimate, se, df)
    assert hi - estimate == pytest.approx(student_t.ppf(0.975, 2) * se)
    assert t_p_value(estimate, se, df) == pytest.approx(ttest_1samp(values, 0).pvalue)


def test_seed_image_t_adds_the_shared_image_variance_once():
    """Seeds that differ by a constant and share every image's value: the image part is the bootstrap variance of
    one seed's mean, counted once (not divided by the number of seeds), on top of the seeds' variance."""
    from dhanalysis.stats.bootstrap import seed_image_t

    rng = np.random.default_rng(6)
    image = rng.normal(0, 1, 200)
    shift = np.array([0.0, 0.3, -0.1, 0.5])
    x = image[:, None] + shift  # (N, S), no seed×image part
    counts = replicate_counts(200, 2000, seed=7)
    _, se, df = seed_image_t(x.mean(0), counts @ x / 200, 200)
    want = shift.var(ddof=1) / 4 + np.var(counts @ image / 200, ddof=1)
    assert float(se) ** 2 == pytest.approx(want, rel=1e-9) and 3 < float(df) < 199
    # one seed: the image bootstrap alone, N − 1 degrees of freedom
    _, se1, df1 = seed_image_t(x.mean(0)[:1], (counts @ x / 200)[:, :1], 200)
    assert float(se1) == pytest.approx(np.std(counts @ image / 200, ddof=1)) and float(df1) == 199


def test_seed_image_t_takes_out_the_seed_by_image_part_the_seed_variance_holds():
    """Pure seed×image noise (no seed effect, no image effect): the seeds' variance already holds it, so the
    standard error is close to its true value sqrt(σ² / (S N)), not twice its variance."""
    from dhanalysis.stats.bootstrap import seed_image_t

    rng = np.random.default_rng(8)
    s, n = 5, 300
    x = rng.normal(0, 1, (400, n, s))  # 400 studies
    counts = replicate_counts(n, 300, seed=9)
    reps = np.einsum("bn,rns->rbs", counts, x) / n
    _, se, _ = seed_image_t(x.mean(1), reps, n)
    assert np.mean(se ** 2) == pytest.approx(1 / (s * n), rel=0.1)


def test_seed_image_t_leaves_out_undefined_replicates_and_gives_up_below_half():
    from dhanalysis.stats.bootstrap import seed_image_t, t_interval, t_p_value

    rng = np.random.default_rng(10)
    reps = rng.normal(0, 1, (100, 3))
    per_seed = np.array([0.1, 0.2, 0.3])
    holed = reps.copy()
    holed[:30, 1] = np.nan  # a PCC undefined on some replicates' images
    _, se, _ = seed_image_t(per_seed, holed, 50)
    _, se_kept, _ = seed_image_t(per_seed, reps[30:], 50)
    assert float(se) == pytest.approx(float(se_kept))
    holed[:60, 0] = np.nan
    _, se, df = seed_image_t(per_seed, holed, 50)
    assert np.isnan(se) and np.isnan(t_p_value(0.2, float(se), float(df)))
    assert all(np.isnan(t_interval(0.2, float(se), float(df))))


def test_p_value_agrees_with_the_interval():
    """p < 0.05 exactly when the 95% interval excludes 0, so the raw and the Holm verdicts read the same test."""
    from dhanalysis.stats.bootstrap import t_interval, t_p_value

    rng = np.random.default_rng(11)
    for _ in range(500):
        estimate, se, df = rng.normal(0, 1), rng.uniform(0.05, 1), rng.uniform(1.5, 300)
        lo, hi = t_interval(estimate, se, df)
        assert (t_p_value(estimate, se, df) < 0.05) == (lo > 0 or hi < 0)
    assert t_p_value(0.4, 0.0, 3.0) == 0.0 and t_interval(0.4, 0.0, 3.0) == (0.4, 0.4)


# ----------------------------------------------------------------------------------------- evidence
def constructed_matches(num_images: int, hit_rate: float, rng: np.random.Generator) -> CocoMatches:
    """One category, one object and one detection per image: the first 100 images always hit, the rest with
    ``hit_rate`` (so AP on the first 100 is 1 and on all of them is not)."""
    hit = (np.arange(num_images) < 100) | (rng.uniform(size=num_images) < hit_rate)
    return CocoMatches(list(range(1, num_images + 1)), np.arange(num_images), np.zeros(num_images, np.int64),
                       rng.uniform(0.1, 1.0, num_images), np.stack([hit, hit]), np.zeros((2, num_images), bool),
                       np.ones((num_images, 1), np.int64), np.array([0.5, 0.75]))


def test_ap_draws_resample_the_images_ap_is_measured_on():
    """Analyses on 100 images and AP on 300: the AP replicates resample all 300 (not the analysed 100), every seed
    and run of a replicate reads the same draw, and each estimate says which images it used."""
    from dhanalysis.stats.bootstrap import ratio_of_sums
    from dhanalysis.study.evidence import (ANALYSED_IMAGES, EVALUATED_IMAGES, Evidence, ImageSums, ap_difference,
                                              paired_difference)

    rng = np.random.default_rng(12)
    analysed = [ImageSums(image_ids=list(range(1, 101)), objects=rng.normal(1, 1, 100)) for _ in range(2)]
    same = constructed_matches(300, 0.5, np.random.default_rng(13))
    matches = {("a", "m"): [same, same], ("b", "m"): [constructed_matches(300, 0.3, rng) for _ in range(2)]}
    ev = Evidence([0, 1], {"model": analysed}, matches, replicates=200, seed=3)

    counts = ev.draws(same.image_ids)
    assert counts.shape == (200, 300)
    np.testing.assert_array_equal(counts, replicate_counts(300, 200, seed=3))
    own, reps = ev.ap(("a", "m"))
    want = np.array([same.ap(positions_of(row))[0] for row in counts])
    np.testing.assert_allclose(reps[:, 0], want)
    np.testing.assert_array_equal(reps[:, 0], reps[:, 1])  # both seeds read the replicate's one draw
    assert own[0] < 0.9 and abs(reps.mean() - own[0]) < 0.05  # replicates of the first 100 images alone would be 1

    ap = ap_difference(ev, ("a", "m"), [("b", "m")])
    assert (ap.n_images, ap.image_set) == (300, EVALUATED_IMAGES)
    assert ap.ci_low < ap.value < ap.ci_high and np.isfinite(ap.p_value)
    window = paired_difference(ev, [(1.0, "model", lambda s: (np.stack([s.objects, np.ones(100)], 1),
                                                              ratio_of_sums))])
    assert (window.n_images, window.image_set) == (100, ANALYSED_IMAGES)
    assert ev.draws(analysed[0].image_ids).shape == (200, 100)

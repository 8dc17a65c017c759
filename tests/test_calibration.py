"""Calibration errors against independent references: D-ECE and MCE against netcal (the reference implementation of
Küppers et al.: ``netcal.metrics.ECE(bins=10, detection=True)`` and ``MCE``) fed the true-positive flags of a matcher
written out from COCOeval's rules (test_lrp.fates); LaECE_0 against the authors' definition recomputed in float64 (per
class, their bin edges, a loop over bins). The files are test_lrp's cases: one-decimal scores put many detections
exactly on bin edges (0.0, 0.1, ..., 1.0), which is where the bin conventions differ."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_lrp import case, fates, positives

from dhanalysis.metrics import calibration, coco_match
from dhanalysis.errors import DHError



def evaluations(gt: dict, dets: list[dict]):
    g = coco_match.ground_truth_boxes(gt)
    d = coco_match.detection_boxes([x["image_id"] for x in dets], [x["category_id"] for x in dets],
                                   [x["bbox"] for x in dets], [x["score"] for x in dets])
    images, cats = [im["id"] for im in gt["images"]], [c["id"] for c in gt["categories"]]
    ev = coco_match.evaluate(g, d, images, cats, (0.5, 0.75))
    laece_ev = coco_match.evaluate(g, d, images, cats, (calibration.LAECE_IOU,), coco_match.AREA_RANGES[:1],
                                   coco_match.AREA_LABELS[:1], (100,))
    return ev, laece_ev, g, d


def ours(gt: dict, dets: list[dict], binning: str = calibration.EQUAL_WIDTH):
    ev, laece_ev, g, d = evaluations(gt, dets)
    return calibration.calibration_table(ev, laece_ev, g, d, {c["id"]: c["name"] for c in gt["categories"]}, binning)


def counted(gt: dict, dets: list[dict], iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reference's counted detections in file order: scores, TP flags, matched IoU (0 for FP), classes."""
    outcome = fates(gt, dets, iou)
    keep = [i for i, (f, _) in enumerate(outcome) if f in ("tp", "fp")]
    return (np.array([dets[i]["score"] for i in keep], np.float64), np.array([outcome[i][0] == "tp" for i in keep]),
            np.array([outcome[i][1] if outcome[i][0] == "tp" else 0.0 for i in keep]),
            np.array([dets[i]["category_id"] for i in keep]))


def reference_laece(gt: dict, dets: list[dict], bins: int = calibration.LAECE_BINS,
                    tau: float = calibration.LAECE_IOU) -> tuple[float, dict[int, float]]:
    """LaECE by the authors' definition: per class with objects and detections, 25 bins of width 1/25 (the first
    [0, 1/25], then (lo, hi]), Σ_j n_j / N |mean score_j − Σ_TP IoU / n_j|; the mean over those classes."""
    score, _, target, cls = counted(gt, dets, tau)
    edges = np.linspace(0.0, 1.0, bins + 1)
    per_class = {}
    for c in (c["id"] for c in gt["categories"]):
        mine = [(s, t) for s, t, k in zip(score, target, cls) if k == c]
        if positives(gt, c) == 0 or not mine:
            continue
        error = 0.0
        for j in range(bins):
            inside = [(s, t) for s, t in mine if (edges[j] <= s if j == 0 else edges[j] < s) and s <= edges[j + 1]]
            if inside:
                mean_score = math.fsum(s for s, _ in inside) / len(inside)
                mean_target = math.fsum(t for _, t in inside) / len(inside)
                error += len(inside) / len(mine) * abs(mean_score - mean_target)
        per_class[c] = error
    return float(np.mean(list(per_class.values()))), per_class


# ------------------------------------------------------------------------------------------------ D-ECE and MCE
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("variant", ["tied", "silent"])
def test_dece_and_mce_equal_netcal(seed, variant):
    netcal_metrics = pytest.importorskip("netcal.metrics")  # the test extra installs it
    gt, dets = case(seed, variant)
    table, summary = ours(gt, dets)
    for iou in (0.5, 0.75):
        score, tp, _, _ = counted(gt, dets, iou)
        assert (np.round(score, 1) == score).sum() > len(score) / 3  # on a bin edge, as a decimal
        ece = netcal_metrics.ECE(bins=10, detection=True).measure(score, tp.astype(np.int64))
        mce = netcal_metrics.MCE(bins=10, detection=True).measure(score, tp.astype(np.int64))
        key = int(iou * 100)
        assert summary[f"ece_{key}"] == ece and summary[f"mce_{key}"] == mce  # bit for bit
        rows = table[(table["measure"] == calibration.DECE) & (table["iou"] == iou)]
        assert rows["n"].sum() == len(score) and (rows["accuracy"] * rows["n"]).sum() == pytest.approx(tp.sum())
        assert (rows["binning"] == calibration.EQUAL_WIDTH).all()
        assert float((rows["weight"] * rows["gap"]).sum()) == pytest.approx(ece, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
def test_equal_count_dece_equals_netcal_equal_mass(seed):
    """``equal-count``: netcal's ``equal_intervals=False`` (score quantiles as edges) on distinct scores."""
    netcal_metrics = pytest.importorskip("netcal.metrics")
    gt, dets = case(seed, "distinct")
    table, summary = ours(gt, dets, calibration.EQUAL_COUNT)
    score, tp, _, _ = counted(gt, dets, 0.5)
    ece = netcal_metrics.ECE(bins=10, detection=True, equal_intervals=False).measure(score, tp.astype(np.int64))
    mce = netcal_metrics.MCE(bins=10, detection=True, equal_intervals=False).measure(score, tp.astype(np.int64))
    assert summary["ece_50"] == ece and summary["mce_50"] == mce  # bit for bit
    rows = table[(table["measure"] == calibration.DECE) & (table["iou"] == 0.5)]
    assert (rows["binning"] == calibration.EQUAL_COUNT).all() and rows["n"].max() - rows["n"].min() <= 2
    inner = rows["bin_lo"].to_numpy()[1:]
    assert not np.allclose(inner, np.round(inner, 1))  # quantiles, not tenths
    # (every bin overconfident here, so D-ECE is the overall gap whatever the bins: compare MCE)
    assert summary["mce_50"] != ours(gt, dets)[1]["mce_50"]


def test_bin_edges_follow_each_definitions_convention():
    edges = np.linspace(0, 1, 11)
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 0.05])
    # netcal (D-ECE): [lo, hi), the last bin closed; 0.3 and 0.7 are the doubles just below linspace's edges
    assert calibration.bin_index(scores, edges).tolist() == [0, 1, 2, 2, 5, 6, 9, 9, 0]
    # the LaECE authors: [0, e1], then (lo, hi]
    assert calibration.bin_index(scores, edges, right_closed=True).tolist() == [0, 0, 1, 2, 4, 6, 8, 9, 0]


# ------------------------------------------------------------------------------------------------ LaECE
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("variant", ["tied", "distinct", "silent"])
def test_laece_equals_the_authors_definition(seed, variant):
    gt, dets = case(seed, variant)
    table, summary = ours(gt, dets)
    expected, per_class = reference_laece(gt, dets)
    assert summary["laece"] == pytest.approx(expected, abs=1e-12)
    rows = table[table["measure"] == calibration.LAECE]
    assert set(rows["category_id"]) == set(per_class)  # classes without objects or detections are left out
    for c, value in per_class.items():
        mine = rows[rows["category_id"] == c]
        assert float((mine["weight"] * mine["gap"]).sum()) == pytest.approx(value, abs=1e-12)
        assert mine["weight"].sum() == pytest.approx(1.0)


def test_laece_tells_loose_boxes_apart_where_dece_cannot():
    """Every object found once with score 1: by boxes that fit exactly, or by boxes of IoU 0.6. D-ECE is 0 for
    both (every detection is a true positive); LaECE is 0 and 0.4."""
    gt = {"images": [{"id": i} for i in range(4)], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": i + 1, "image_id": i, "category_id": 1 + i % 2, "bbox": [0.0, 0.0, 50.0, 50.0],
                           "area": 2500.0, "iscrowd": 0} for i in range(4)]}
    for height, expected in ((50.0, 0.0), (30.0, 0.4)):
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [0.0, 0.0, 50.0, height],
                 "score": 1.0} for a in gt["annotations"]]
        _, summary = ours(gt, dets)
        assert summary["ece_50"] == pytest.approx(0.0, abs=1e-15)  # netcal's clip: score 1 counts as 1 - 2.2e-16
        assert summary["mce_50"] == pytest.approx(0.0, abs=1e-15)
        assert summary["laece"] == pytest.approx(expected, abs=1e-12)


def test_overconfident_false_positives():
    """Detections that are all wrong with score 0.8: D-ECE = MCE = 0.8, and LaECE 0.8 (target 0)."""
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 20.0, 20.0], "area": 400.0,
                           "iscrowd": 0}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [100.0 + 30 * k, 100.0, 20.0, 20.0], "score": 0.8}
            for k in range(3)]
    _, summary = ours(gt, dets)
    assert summary["ece_50"] == pytest.approx(0.8) and summary["mce_50"] == pytest.approx(0.8)
    assert summary["laece"] == pytest.approx(0.8)


def test_unknown_binning_is_refused():
    with pytest.raises(DHError, match="equal-width, equal-count"):
        calibration.check_binning("equal-mass")

"""oLRP against its definition recomputed by brute force in float64: for each class and each candidate score threshold,
the detections with score >= it matched afresh by a loop written from COCOeval's rules, LRP from the TPAMI formula,
the minimum taken over the thresholds and keeping nothing. The files come from test_coco_match's generator (crowds,
classes with crowds only or no objects, one-decimal scores: many ties, an image with 130 detections of one class),
with one class's detections removed (a class with objects and no detections) and with the ties broken."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
from test_coco_match import generated

from dhanalysis.metrics import coco_match, lrp

TAU = 0.5


# ------------------------------------------------------------------------------------------------ the reference
def iou_written_out(d: list[float], g: list[float], crowd: bool) -> float:
    """IoU of two xywh boxes in float64; for a crowd ground truth the union is the detection's area (COCOeval)."""
    w = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0])
    h = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = d[2] * d[3] if crowd else d[2] * d[3] + g[2] * g[3] - inter
    return inter / union


def fates(gt: dict, dets: list[dict], iou_threshold: float, max_dets: int = 100) -> list[tuple[str | None, float]]:
    """Each detection's outcome in COCOeval at one IoU threshold, area "all": ("tp", IoU of its match), ("fp", 0),
    ("ignored", IoU) or (None, 0) beyond the ``max_dets`` best of its image and class. One (image, class) at a time:
    detections by falling score (ties in file order), ground truths not ignored first (a crowd, or an area outside
    [0, 1e10], is ignored); each detection takes the free ground truth of highest IoU >= the threshold (a crowd stays
    free; of equal IoU the later), and stops at the first ignored one once it holds a counted one."""
    out: list[tuple[str | None, float]] = [(None, 0.0)] * len(dets)
    objects, groups = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        objects[(a["image_id"], a["category_id"])].append(a)
    for i, d in enumerate(dets):
        groups[(d["image_id"], d["category_id"])].append(i)
    bound = min(iou_threshold, 1 - 1e-10)
    for key, members in groups.items():
        ranked = sorted(members, key=lambda i: -dets[i]["score"])[:max_dets]
        anns = sorted(objects.get(key, []), key=lambda a: bool(a["iscrowd"]) or not 0 <= a["area"] <= 1e10)
        ignored = [bool(a["iscrowd"]) or not 0 <= a["area"] <= 1e10 for a in anns]
        taken = [False] * len(anns)
        for i in ranked:
            ious = [iou_written_out(dets[i]["bbox"], a["bbox"], bool(a["iscrowd"])) for a in anns]
            best, choice = bound, -1
            for j in range(len(anns)):
                if taken[j] and not anns[j]["iscrowd"]:
                    continue
                if choice >= 0 and not ignored[choice] and ignored[j]:
                    break
                if ious[j] < best:
                    continue
                best, choice = ious[j], j
            if choice < 0:
                out[i] = ("fp", 0.0)
            else:
                taken[choice] = True
                out[i] = ("ignored" if ignored[choice] else "tp", ious[choice])
    return out


def positives(gt: dict, category: int) -> int:
    return sum(1 for a in gt["annotations"] if a["category_id"] == category and not a["iscrowd"]
               and 0 <= a["area"] <= 1e10)


def reference_olrp(gt: dict, dets: list[dict], category: int, tau: float = TAU) -> dict[str, float]:
    """oLRP of one class by its definition: every distinct score of the class's detections as a threshold, the kept
    detections matched afresh, LRP = (Σ_TP (1 − IoU)/(1 − τ) + FP + FN) / (TP + FP + FN); keeping nothing scores 1.
    The minimum, of equal values the highest threshold (keeping nothing the highest of all)."""
    n_gt = positives(gt, category)
    if n_gt == 0:
        return {"olrp": math.nan}
    mine = [d for d in dets if d["category_id"] == category]
    best = {"olrp": 1.0, "threshold": math.nan, "tp": 0, "fp": 0, "loc": 0.0}
    for s in sorted({d["score"] for d in mine}, reverse=True):
        kept = [d for d in mine if d["score"] >= s]
        outcome = fates(gt, kept, tau)
        tp = sum(1 for f, _ in outcome if f == "tp")
        fp = sum(1 for f, _ in outcome if f == "fp")
        loc = math.fsum(1.0 - v for f, v in outcome if f == "tp")
        value = (loc / (1 - tau) + fp + (n_gt - tp)) / (tp + fp + (n_gt - tp))
        if value < best["olrp"] - 1e-12:  # strictly better: a lower threshold never wins a tie
            best = {"olrp": value, "threshold": s, "tp": tp, "fp": fp, "loc": loc}
    tp, fp = best["tp"], best["fp"]
    return {**best, "fn": n_gt - tp, "olrp_loc": best["loc"] / tp if tp else math.nan,
            "olrp_fp": fp / (tp + fp) if tp + fp else math.nan, "olrp_fn": (n_gt - tp) / n_gt}


# ------------------------------------------------------------------------------------------------ cases
def case(seed: int, variant: str) -> tuple[dict, list[dict]]:
    """``tied``: the generator's one-decimal scores; ``distinct``: each score moved by a distinct tiny amount;
    ``silent``: class 3 keeps its objects but loses every detection."""
    gt, dets = generated(seed)
    if variant == "distinct":
        rng = np.random.default_rng(seed)
        step = rng.permutation(len(dets)) * 1e-6
        dets = [{**d, "score": float(d["score"] * 0.999 + step[i])} for i, d in enumerate(dets)]
    elif variant == "silent":
        dets = [d for d in dets if d["category_id"] != 3]
    return gt, dets


def ours(gt: dict, dets: list[dict], thresholds=(TAU,)):
    g = coco_match.ground_truth_boxes(gt)
    d = coco_match.detection_boxes([x["image_id"] for x in dets], [x["category_id"] for x in dets],
                                   [x["bbox"] for x in dets], [x["score"] for x in dets])
    ev = coco_match.evaluate(g, d, [im["id"] for im in gt["images"]], [c["id"] for c in gt["categories"]],
                             thresholds)
    return lrp.lrp_table(ev, g, d, {c["id"]: c["name"] for c in gt["categories"]})


def test_cases_hold_what_they_are_meant_to():
    gt, dets = case(0, "tied")
    cats = {d["category_id"] for d in dets}
    assert positives(gt, 9) == 0 and 9 in cats  # detections of a class without objects
    assert positives(gt, 5) == 0 and any(a["category_id"] == 5 for a in gt["annotations"])  # crowds only
    assert len({d["score"] for d in dets}) < len(dets) / 3  # ties
    gt, dets = case(0, "silent")
    assert positives(gt, 3) > 0 and 3 not in {d["category_id"] for d in dets}
    gt, dets = case(0, "distinct")
    assert len({d["score"] for d in dets}) == len(dets)


# ------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("variant", ["tied", "distinct", "silent"])
def test_olrp_equals_its_definition_by_brute_force(seed, variant):
    gt, dets = case(seed, variant)
    table, summary = ours(gt, dets)
    rows = table.set_index("category_id")
    with_gt = []
    for c in (c["id"] for c in gt["categories"]):
        ref, row = reference_olrp(gt, dets, c), rows.loc[c]
        assert row["ground_truths"] == positives(gt, c)
        if math.isnan(ref["olrp"]):  # left out: no ground truth that counts
            assert row[["olrp", "olrp_loc", "olrp_fp", "olrp_fn", "threshold"]].isna().all()
            continue
        with_gt.append(ref)
        assert row["olrp"] == pytest.approx(ref["olrp"], abs=1e-12)
        assert (row["tp"], row["fp"], row["fn"]) == (ref["tp"], ref["fp"], ref["fn"])
        for key in ("olrp_loc", "olrp_fp", "olrp_fn", "threshold"):
            assert row[key] == pytest.approx(ref[key], abs=1e-12, nan_ok=True), (c, key)
    overall = rows.loc[lrp.ALL_ID]
    assert overall["olrp"] == pytest.approx(np.mean([r["olrp"] for r in with_gt]), abs=1e-12)
    assert summary["olrp"] == overall["olrp"]
    for key in ("olrp_loc", "olrp_fp", "olrp_fn"):
        assert summary[key] == pytest.approx(np.nanmean([r[key] for r in with_gt]), abs=1e-12)
    assert (overall["tp"], overall["fp"]) == (sum(r["tp"] for r in with_gt), sum(r["fp"] for r in with_gt))


def test_a_class_no_threshold_helps_keeps_nothing():
    """A class whose detections are all false positives: oLRP 1, no threshold, FN component 1, the others undefined;
    perfect boxes: oLRP 0 at the lowest score."""
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1 + k % 2, "bbox": [10.0 + 40 * k, 10.0, 30, 30],
                           "area": 900.0, "iscrowd": 0} for k in range(4)]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 0.9 - 0.1 * k}
            for k, a in enumerate(gt["annotations"]) if a["category_id"] == 1]
    dets += [{"image_id": 1, "category_id": 2, "bbox": [300.0, 200.0, 20, 20], "score": 0.8}]
    table, _ = ours(gt, dets)
    a, b = table.set_index("category").loc["a"], table.set_index("category").loc["b"]
    assert a["olrp"] == 0.0 and a["threshold"] == pytest.approx(0.7) and a["olrp_loc"] == 0.0
    assert b["olrp"] == 1.0 and math.isnan(b["threshold"]) and b["olrp_fn"] == 1.0
    assert math.isnan(b["olrp_loc"]) and math.isnan(b["olrp_fp"]) and (b["tp"], b["fp"], b["fn"]) == (0, 0, 2)


def test_loose_boxes_cost_less_than_misses():
    """One object per image, found by a box of IoU 0.75: LRP = (0.25 / 0.5) / 1 = 0.5 per the TPAMI formula, its
    localisation component 0.25 (not divided by 1 − τ)."""
    gt = {"images": [{"id": i} for i in range(3)], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": i + 1, "image_id": i, "category_id": 1, "bbox": [0.0, 0.0, 40.0, 40.0],
                           "area": 1600.0, "iscrowd": 0} for i in range(3)]}
    dets = [{"image_id": i, "category_id": 1, "bbox": [0.0, 0.0, 40.0, 30.0], "score": 0.5} for i in range(3)]
    table, summary = ours(gt, dets)
    assert summary["olrp"] == pytest.approx(0.5) and summary["olrp_loc"] == pytest.approx(0.25)
    assert summary["olrp_fp"] == 0.0 and summary["olrp_fn"] == 0.0


def test_needs_the_threshold_in_the_evaluation():
    gt, dets = case(0, "tied")
    with pytest.raises(ValueError, match="not one of the evaluation's thresholds"):
        ours(gt, dets, thresholds=(0.75,))


@pytest.mark.parametrize("seed", [0, 1])
def test_olrp_equals_vernier(seed):
    """vernier's optimal_lrp (an independent implementation), where it is installed, with every distinct score as
    its threshold grid: the same oLRP, FP and FN components and thresholds; its localisation component is the mean
    (1 − IoU) divided by 1 − τ (the ECCV 2018 normalisation), ours the TPAMI one, undivided."""
    vernier = pytest.importorskip("vernier.instance")
    gt, dets = case(seed, "tied")
    table, summary = ours(gt, dets)
    report = vernier.optimal_lrp(json.dumps(gt).encode(), json.dumps(dets).encode(),
                                 tau_grid=sorted({d["score"] for d in dets}))
    rows = table.set_index("category_id")
    for theirs in report.per_class:
        row = rows.loc[theirs.category_id]
        assert row["olrp"] == pytest.approx(theirs.olrp, abs=1e-12, nan_ok=True)
        assert row["olrp_fp"] == pytest.approx(theirs.olrp_fp, abs=1e-12, nan_ok=True)
        assert row["olrp_fn"] == pytest.approx(theirs.olrp_fn, abs=1e-12, nan_ok=True)
        assert row["olrp_loc"] == pytest.approx(theirs.olrp_loc * (1 - TAU), abs=1e-12, nan_ok=True)
        assert row["threshold"] == pytest.approx(theirs.tau, abs=1e-12, nan_ok=True)
    assert summary["olrp"] == pytest.approx(report.olrp, abs=1e-12)

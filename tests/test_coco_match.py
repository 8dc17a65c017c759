"""The vectorised COCO evaluation equals pycocotools' COCOeval element for element: every detection's match and
ignore flag at every threshold and area range, the accumulated precision, recall and score arrays, and summarize()'s
twelve stats — on files built to hit COCOeval's corner cases (crowds, areas at the range edges, tied scores, tied IoUs
from duplicate and integer boxes, more than 100 detections of one image and class, classes with no objects or only
crowds, images with no objects, images with no detections, evaluated image subsets, other max detections)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from dhanalysis.metrics.coco_match import (area_index, class_ap, detection_boxes, evaluate, ground_truth_boxes,
                                              result_boxes, summarize)


def generated(seed: int) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 5, 9)]  # 9: no objects; 5: crowds only
    images, anns, dets = [], [], []
    for i in range(14):
        images.append({"id": 100 + 7 * i, "width": 200, "height": 160})
        if i == 3:
            continue  # an image without objects (its detections are all false positives)
        for _ in range(rng.integers(1, 7)):
            w, h = rng.integers(3, 120, 2).astype(float)
            x, y = float(rng.integers(0, 80)), float(rng.integers(0, 40))
            cat = int(rng.choice([1, 2, 3, 5], p=[0.4, 0.3, 0.25, 0.05]))
            crowd = int(cat == 5 or rng.random() < 0.08)
            area = w * h if rng.random() < 0.7 else float(rng.choice([32.0**2, 96.0**2, w * h * 0.6]))
            anns.append({"id": len(anns) + 1, "image_id": 100 + 7 * i, "category_id": cat, "bbox": [x, y, w, h],
                         "area": area, "iscrowd": crowd})
            if rng.random() < 0.2:  # the same object annotated twice: a detection has two ground truths of equal IoU
                anns.append({**anns[-1], "id": len(anns) + 1, "iscrowd": int(rng.random() < 0.3)})
    for a in anns:
        for _ in range(rng.integers(0, 5)):
            x, y, w, h = a["bbox"]
            if rng.random() < 0.3:  # an exact or integer-shifted copy: tied IoUs
                box = [x + float(rng.integers(-2, 3)), y, w, h]
            else:
                j = rng.normal(0, 0.15, 4)
                box = [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])]
            cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice([1, 2, 3, 5, 9]))
            dets.append({"image_id": a["image_id"], "category_id": cat, "bbox": [float(v) for v in box],
                         "score": float(np.round(rng.random(), 1))})  # one decimal: many tied scores
    for _ in range(130):  # more than 100 detections of one image and class
        x, y = rng.uniform(0, 150, 2)
        dets.append({"image_id": 100, "category_id": 1, "bbox": [float(x), float(y), 20.0, 20.0],
                     "score": float(np.round(rng.random(), 2))})
    for im in images:  # background boxes, of every size group
        for _ in range(rng.integers(0, 6)):
            side = float(rng.choice([8.0, 32.0, 40.0, 96.0, 110.0]))
            dets.append({"image_id": im["id"], "category_id": int(rng.choice([1, 2, 3, 9])),
                         "bbox": [float(rng.uniform(0, 90)), float(rng.uniform(0, 50)), side, side],
                         "score": float(np.round(rng.random(), 1))})
    order = rng.permutation(len(dets))
    return {"images": images, "annotations": anns, "categories": cats}, [dets[i] for i in order]


def reference(gt: dict, dets: list[dict], thresholds, area_all_only: bool):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.params.iouThrs = np.asarray(thresholds, np.float64)
        if area_all_only:
            ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [100]
        ev.evaluate()
        ev.accumulate()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("thresholds,area_all_only", [(np.linspace(0.5, 0.95, 10), False),
                                                      ((*np.round(np.linspace(0.5, 0.95, 10), 2), 0.1), False),
                                                      ((0.1,), True), ((0.0,), True)])
def test_equals_cocoeval(seed, thresholds, area_all_only):
    gt, dets = generated(seed)
    ev = reference(gt, dets, thresholds, area_all_only)
    p = ev.params
    dt = detection_boxes([d["image_id"] for d in dets], [d["category_id"] for d in dets],
                         [d["bbox"] for d in dets], [d["score"] for d in dets])
    ours = evaluate(ground_truth_boxes(gt), dt, [im["id"] for im in gt["images"]],
                    [c["id"] for c in gt["categories"]], thresholds, [tuple(a) for a in p.areaRng], p.areaRngLbl,
                    p.maxDets)
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(ours.eval[key], ev.eval[key]), key
    n_area, n_img = len(p.areaRng), len(p.imgIds)
    seen = np.zeros(len(dets), bool)
    for k in range(len(p.catIds)):
        for a in range(n_area):
            for e in ev.evalImgs[(k * n_area + a) * n_img:(k * n_area + a + 1) * n_img]:
                if e is None or not e["dtIds"]:
                    continue
                rows = np.asarray(e["dtIds"]) - 1
                assert np.array_equal(ours.dt_match[a][:, rows], np.asarray(e["dtMatches"]).astype(np.int64))
                assert np.array_equal(ours.dt_ignore[a][:, rows], np.asarray(e["dtIgnore"]).astype(bool))
                seen[rows] = True
    assert np.array_equal(ours.evaluated, seen)
    assert (~ours.evaluated).sum() >= 30  # the image and class with 130 detections keeps 100
    assert (ours.dt_match[:, :, ~ours.evaluated] == 0).all()


def test_cocoeval_corner_cases_occur():
    """The generated files hold what the comparison is meant to cover."""
    gt, dets = generated(0)
    scores = [d["score"] for d in dets]
    boxes = {tuple(d["bbox"]) for d in dets}
    assert len(set(scores)) < len(scores) / 3  # tied scores
    assert len(boxes) < len(dets)  # identical boxes: tied IoUs
    assert any(a["iscrowd"] for a in gt["annotations"]) and any(a["area"] == 96.0**2 for a in gt["annotations"])


def pycocotools_eval(gt: dict, dets: list[dict], image_ids=None, max_dets=None):
    """pycocotools' COCOeval of ``dets`` on ``gt`` with its default parameters (optionally other images and max
    detections): evaluated, accumulated and summarized."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")  # loadRes edits the dicts it gets
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        if max_dets is not None:
            ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def sparse_case(seed: int) -> tuple[dict, list[dict], list[int]]:
    """A generated file with an image of objects but no detections, an image with neither, and an image with
    detections only; evaluated on a subset of its images (the detections of the others are not counted)."""
    gt, dets = generated(seed)
    gt = {**gt, "images": [*gt["images"], {"id": 5, "width": 50, "height": 50}]}  # no objects, no detections
    with_objects = sorted({a["image_id"] for a in gt["annotations"]})
    undetected = with_objects[1]
    dets = [d for d in dets if d["image_id"] != undetected]
    left_out = with_objects[-1]
    image_ids = [im["id"] for im in gt["images"] if im["id"] != left_out]
    return gt, dets, image_ids


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_dets", [None, (1, 5, 50)])
def test_summary_equals_cocoevals_stats(seed, max_dets):
    """summarize()'s twelve stats (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) and each class's AP are
    pycocotools': with the default max detections and with others (where COCOeval's AP at 100 detections is -1)."""
    gt, dets, image_ids = sparse_case(seed)
    ref = pycocotools_eval(gt, dets, image_ids, max_dets)
    ev = evaluate(ground_truth_boxes(gt), result_boxes(dets), image_ids, [c["id"] for c in gt["categories"]],
                  max_dets=max_dets or (1, 10, 100))
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(ev.eval[key], ref.eval[key]), key
    stats = summarize(ev)
    assert stats.shape == (12,) and np.array_equal(stats, np.asarray(ref.stats)), (stats, ref.stats)
    assert (stats[0] == -1) == (max_dets is not None) and (stats[1:] > 0).all()
    prec = ref.eval["precision"][:, :, :, 0, -1]
    want = [prec[:, :, k][prec[:, :, k] > -1].mean() if (prec[:, :, k] > -1).any() else np.nan
            for k in range(prec.shape[2])]
    np.testing.assert_array_equal(class_ap(ev), want)
    assert np.isnan(class_ap(ev)).sum() == 2  # category 9 has no objects, 5 only crowds


def test_the_all_range_is_found_by_label():
    gt, dets = generated(0)
    ev = evaluate(ground_truth_boxes(gt), result_boxes(dets), [im["id"] for im in gt["images"]],
                  [c["id"] for c in gt["categories"]], area_ranges=[(0.0, 32.0**2), (0.0, 1e10)],
                  area_labels=["small", "all"])
    assert area_index(ev.params) == 1 and area_index(ev.params, "small") == 0
    with pytest.raises(ValueError, match="'large' is not one of"):
        area_index(ev.params, "large")

"""Average recall, threshold metrics and the confusion matrix against independent references: pycocotools'
summarize() for AR; a greedy matcher written out below from COCOeval's rules, run afresh on the thresholded file,
for precision / recall / F1; a per-image loop of ultralytics' counting for the confusion matrix. The files come from
test_coco_match's generator (crowds, areas at the range edges, one-decimal scores, duplicate boxes, an image with
130 detections of one class, classes without objects) with two annotated images' detections removed."""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_coco_match import generated
from test_detections import make_dets, make_gt, write

from dhanalysis.metrics import coco_match, detections, threshold_metrics
from dhanalysis.errors import DHError
from dhanalysis.vocab import (DETECTIONS_CONFUSION_CSV, DETECTIONS_F1_CURVE_CSV, DETECTIONS_RECALL_CSV,
                              DETECTIONS_THRESHOLDS_CSV)

SEEDS = [0, 1, 2]


def case(seed: int) -> tuple[dict, list[dict]]:
    """A generated file in which two images with objects have no detections at all."""
    gt, dets = generated(seed)
    annotated = sorted({a["image_id"] for a in gt["annotations"]})
    silent = {annotated[1], annotated[-2]}
    return gt, [d for d in dets if d["image_id"] not in silent]


def names_of(gt: dict) -> dict[int, str]:
    return {c["id"]: c["name"] for c in gt["categories"]}


def boxes(gt: dict, dets: list[dict]) -> tuple[coco_match.Boxes, coco_match.Boxes]:
    return coco_match.ground_truth_boxes(gt), coco_match.detection_boxes(
        [d["image_id"] for d in dets], [d["category_id"] for d in dets], [d["bbox"] for d in dets],
        [d["score"] for d in dets])


def ours_evaluation(gt: dict, dets: list[dict], thresholds=np.linspace(0.5, 0.95, 10)) -> coco_match.Evaluation:
    g, d = boxes(gt, dets)
    return coco_match.evaluate(g, d, [im["id"] for im in gt["images"]], [c["id"] for c in gt["categories"]],
                               thresholds)


def test_cases_hold_what_they_are_meant_to():
    gt, dets = case(0)
    with_objects = {a["image_id"] for a in gt["annotations"]}
    assert with_objects - {d["image_id"] for d in dets}  # annotated images without detections
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert sum(d["score"] == 0.5 for d in dets) > 5  # ties at the default threshold itself


# ------------------------------------------------------------------------------------------------ average recall
def cocoeval_summarized(gt: dict, dets: list[dict]) -> COCOeval:
    """pycocotools' own evaluation of ``dets`` against ``gt``, summarised (``stats`` filled): the reference."""
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ref = COCOeval(coco, coco.loadRes(dets), "bbox")
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    return ref


@pytest.mark.parametrize("seed", SEEDS)
def test_average_recall_equals_cocoeval_summarize(seed):
    gt, dets = case(seed)
    ref = cocoeval_summarized(gt, dets)
    table = threshold_metrics.average_recall(ours_evaluation(gt, dets), names_of(gt))
    got = threshold_metrics.recall_summary(table)
    assert list(got) == ["AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert np.array_equal(np.array(list(got.values())), ref.stats[6:12])  # bit for bit
    # per class: the mean over the ten IoU thresholds of COCOeval's recall, NaN where it has none
    p = ref.params
    for a, area in enumerate(p.areaRngLbl):
        for m, max_dets in enumerate(p.maxDets):
            rows = table[(table["area"] == area) & (table["max_dets"] == max_dets) & (table["category_id"] >= 0)]
            for k, cat in enumerate(p.catIds):
                r = ref.eval["recall"][:, k, a, m]
                value = rows.loc[rows["category_id"] == cat, "AR"].item()
                if (r > -1).any():
                    assert value == pytest.approx(r.mean(), abs=1e-15)
                else:
                    assert math.isnan(value)


def test_average_recall_leaves_an_extra_threshold_out():
    """detections evaluates IoU 0.1 beside COCO's ten (analyze()'s Loc curve): AR stays COCO's."""
    gt, dets = case(1)
    plain = threshold_metrics.recall_summary(threshold_metrics.average_recall(ours_evaluation(gt, dets), {}))
    extra = ours_evaluation(gt, dets, (*np.linspace(0.5, 0.95, 10), 0.1))
    assert threshold_metrics.recall_summary(threshold_metrics.average_recall(extra, {})) == plain


# ------------------------------------------------------------------------------------------------ COCOeval, written out
def cocoeval_outcomes(gt: dict, dets: list[dict], iou_threshold: float, max_dets: int = 100) -> list[str | None]:
    """Each detection's fate in COCOeval at one IoU threshold, area "all": "tp", "fp", "ignored", or None when it is
    beyond the ``max_dets`` best of its image and class. The rules as COCOeval applies them, one (image, class) at a
    time: detections by falling score (ties in file order), ground truths not ignored first; each detection takes the
    ground truth of highest IoU >= the threshold that is free (a crowd is always free), and stops looking once it holds
    a counted one and the rest are ignored ones; a detection on an ignored ground truth is ignored."""
    outcome: list[str | None] = [None] * len(dets)
    objects = defaultdict(list)
    for a in gt["annotations"]:
        objects[(a["image_id"], a["category_id"])].append(a)
    groups = defaultdict(list)
    for i, d in enumerate(dets):
        groups[(d["image_id"], d["category_id"])].append(i)
    bound = min(iou_threshold, 1 - 1e-10)
    for key, members in groups.items():
        ranked = sorted(members, key=lambda i: -dets[i]["score"])[:max_dets]
        anns = objects.get(key, [])
        ignored_flags = [bool(a["iscrowd"]) or not (0 <= a["area"] <= 1e10) for a in anns]
        anns = [a for _, a in sorted(zip(ignored_flags, anns), key=lambda pair: pair[0])]
        ignored = sorted(ignored_flags)
        crowd = [bool(a["iscrowd"]) for a in anns]
        ious = (np.asarray(mask_utils.iou([dets[i]["bbox"] for i in ranked], [a["bbox"] for a in anns], crowd))
                if anns else np.zeros((len(ranked), 0)))
        taken = [False] * len(anns)
        for r, i in enumerate(ranked):
            best, choice = bound, -1
            for j in range(len(anns)):
                if taken[j] and not crowd[j]:
                    continue
                if choice >= 0 and not ignored[choice] and ignored[j]:
                    break
                if ious[r, j] < best:
                    continue
                best, choice = ious[r, j], j
            if choice < 0:
                outcome[i] = "fp"
            else:
                taken[choice] = True
                outcome[i] = "ignored" if ignored[choice] else "tp"
    return outcome


def reference_counts(gt: dict, dets: list[dict], iou_threshold: float,
                     score_threshold: float) -> dict[int, tuple[int, int, int]]:
    """Per class (and -1 for every class together): TP, FP and ground truths, COCOeval rerun on the detections with
    score >= the threshold alone."""
    kept = [d for d in dets if d["score"] >= score_threshold]
    fates = cocoeval_outcomes(gt, kept, iou_threshold)
    out = {}
    for c in [-1] + [c["id"] for c in gt["categories"]]:
        mine = [f for d, f in zip(kept, fates) if c in (-1, d["category_id"])]
        positives = sum(1 for a in gt["annotations"] if c in (-1, a["category_id"]) and not a["iscrowd"])
        out[c] = (mine.count("tp"), mine.count("fp"), positives)
    return out


def reference_rates(tp: int, fp: int, positives: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / positives if positives else math.nan
    if not math.isnan(precision) and not math.isnan(recall):
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    else:  # one of them undefined: F1 is 0 when anything was predicted or missed at all
        f1 = 0.0 if tp + fp + (positives - tp) else math.nan
    return precision, recall, f1


def check_row(row, tp: int, fp: int, positives: int) -> None:
    assert (row["tp"], row["fp"], row["fn"], row["ground_truths"] if "ground_truths" in row else positives) == (
        tp, fp, positives - tp, positives)
    np.testing.assert_allclose([row["precision"], row["recall"], row["f1"]], reference_rates(tp, fp, positives),
                               rtol=0, atol=1e-12)


@pytest.fixture(scope="module", params=SEEDS)
def thresholded(request):
    gt, dets = case(request.param)
    g, d = boxes(gt, dets)
    ev = ours_evaluation(gt, dets)
    point, curve = threshold_metrics.threshold_tables(ev, g, d, names_of(gt), 0.5)
    return gt, dets, point, curve


def test_threshold_metrics_equal_cocoeval_rerun_on_the_kept_detections(thresholded):
    gt, dets, point, _ = thresholded
    fixed = point[point["threshold"] == "fixed"]
    assert len(fixed) == 2 * (len(gt["categories"]) + 1)
    for iou in (0.5, 0.75):
        ref = reference_counts(gt, dets, iou, 0.5)
        for c, (tp, fp, positives) in ref.items():
            check_row(fixed[(fixed["iou"] == iou) & (fixed["category_id"] == c)].iloc[0], tp, fp, positives)
    # classes without objects (recall undefined) and with only false positives occur
    assert fixed["tp"].sum() > 0 and fixed["recall"].isna().any() and (fixed["precision"] == 0).any()


def test_f1_curve_equals_cocoeval_rerun_at_each_threshold(thresholded):
    gt, dets, _, curve = thresholded
    assert sorted(set(curve["score_threshold"])) == list(np.arange(101) / 100)
    for iou in (0.5, 0.75):
        for s in (0.0, 0.1, 0.3, 0.5, 0.73, 0.9, 1.0):  # one-decimal scores sit exactly on most of these
            ref = reference_counts(gt, dets, iou, s)
            part = curve[(curve["iou"] == iou) & (curve["score_threshold"] == s)]
            for c, (tp, fp, positives) in ref.items():
                check_row(part[part["category_id"] == c].iloc[0], tp, fp, positives)


def test_f1_optimum_is_the_best_distinct_score(thresholded):
    """Every distinct score of the file is tried as a threshold (COCOeval rerun each time); the table's optimum is the
    highest of those reaching the best F1, per class and pooled."""
    gt, dets, point, _ = thresholded
    best = point[point["threshold"] == "best_f1"]
    scores = sorted({d["score"] for d in dets}, reverse=True)
    for iou in (0.5, 0.75):
        tried = {s: reference_counts(gt, dets, iou, s) for s in scores}
        for c in [-1] + [c["id"] for c in gt["categories"]]:
            row = best[(best["iou"] == iou) & (best["category_id"] == c)].iloc[0]
            # a class's candidates are the scores of its own counted detections: F1 only changes there
            counts = [(s, tried[s][c]) for s in scores if tried[s][c][0] + tried[s][c][1] > 0]
            if not counts:
                assert math.isnan(row["score_threshold"])
                continue
            f1 = [reference_rates(*n)[2] for _, n in counts]
            top = max(f1)
            s_best, n_best = next((s, n) for (s, n), v in zip(counts, f1) if v >= top - 1e-12)
            assert row["f1"] == pytest.approx(top, abs=1e-12)
            assert row["score_threshold"] == s_best, (iou, c)
            check_row(row, *n_best)


# ------------------------------------------------------------------------------------------------ confusion matrix
def reference_confusion(gt: dict, dets: list[dict], iou_threshold: float, score_threshold: float) -> dict:
    """ultralytics' counting, one image at a time with plain loops: pairs with IoU > the threshold whatever the
    classes; each detection keeps its best pair, then each ground truth its best of those (ties to the earlier one
    in the files); matched -> (true, predicted), missed -> (true, background), left over -> (background, predicted)."""
    cells: dict[tuple, int] = defaultdict(int)
    images = {im["id"] for im in gt["images"]}
    for image in images:
        objects = [a for a in gt["annotations"] if a["image_id"] == image and not a["iscrowd"]]
        found = [d for d in dets if d["image_id"] == image and d["score"] >= score_threshold]
        pairs = []
        for gi, a in enumerate(objects):
            for di, d in enumerate(found):
                iou = float(mask_utils.iou([d["bbox"]], [a["bbox"]], [0])[0][0])
                if iou > iou_threshold:
                    pairs.append((iou, gi, di))
        per_det = {}
        for iou, gi, di in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
            per_det.setdefault(di, (iou, gi, di))
        per_gt = {}
        for iou, gi, di in sorted(per_det.values(), key=lambda p: (-p[0], p[2], p[1])):
            per_gt.setdefault(gi, di)
        for gi, a in enumerate(objects):
            predicted = found[per_gt[gi]]["category_id"] if gi in per_gt else -1
            cells[(a["category_id"], predicted)] += 1
        for di, d in enumerate(found):
            if di not in per_gt.values():
                cells[(-1, d["category_id"])] += 1
    return cells


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("iou_threshold,score_threshold", [(0.5, 0.5), (0.3, 0.0), (0.75, 0.3)])
def test_confusion_matrix_equals_the_direct_count(seed, iou_threshold, score_threshold):
    gt, dets = case(seed)
    g, d = boxes(gt, dets)
    table = threshold_metrics.confusion_matrix(g, d, [c["id"] for c in gt["categories"]], names_of(gt),
                                               iou_threshold, score_threshold)
    k = len(gt["categories"])
    assert len(table) == (k + 1) ** 2 - 1
    ref = reference_confusion(gt, dets, iou_threshold, score_threshold)
    got = {(t, p): n for t, p, n in zip(table["true_id"], table["predicted_id"], table["count"]) if n}
    assert got == dict(ref)
    off_diagonal = table[(table["true_id"] != table["predicted_id"]) & (table["true_id"] >= 0)
                         & (table["predicted_id"] >= 0)]
    assert off_diagonal["count"].sum() > 0  # class confusions occur
    objects = sum(not a["iscrowd"] for a in gt["annotations"])
    assert table[table["true_id"] >= 0]["count"].sum() == objects  # every object once


def test_confusion_matrix_known_answer():
    """One image: a dog seen as a cat (higher IoU than the dog detection), a missed bird, a stray cat detection."""
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
    gt = {"images": [{"id": 1}], "categories": cats, "annotations": [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10], "area": 100.0, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [80, 0, 20, 20], "area": 400.0, "iscrowd": 1}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # IoU 1 with the dog
            {"image_id": 1, "category_id": 2, "bbox": [1, 0, 10, 10], "score": 0.95},  # IoU 0.82: loses the dog
            {"image_id": 1, "category_id": 1, "bbox": [80, 0, 20, 20], "score": 0.8},  # on the crowd
            {"image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10], "score": 0.2}]  # below the threshold
    g, d = boxes(gt, dets)
    table = threshold_metrics.confusion_matrix(g, d, [1, 2, 3], names_of(gt))
    got = {(t, p): n for t, p, n in zip(table["true"], table["predicted"], table["count"]) if n}
    assert got == {("dog", "cat"): 1, ("bird", "background"): 1, ("background", "dog"): 1,
                   ("background", "cat"): 1}


# ------------------------------------------------------------------------------------------------ in the command
@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("thresholds")
    gt = make_gt(4, crowd=0.12)
    dets = make_dets(gt, 4)
    done = detections.compute_detections(*write(tmp, gt, dets), tmp / "out", replicates=0, score_threshold=0.4,
                                         confusion_iou=0.45, progress=lambda s: None)
    return gt, dets, done, tmp


def test_detections_writes_the_tables_and_ar(analysed):
    gt, dets, done, tmp = analysed
    for name in (DETECTIONS_RECALL_CSV, DETECTIONS_THRESHOLDS_CSV, DETECTIONS_F1_CURVE_CSV, DETECTIONS_CONFUSION_CSV):
        assert (tmp / "out" / name).is_file()
        pd.testing.assert_frame_equal(pd.read_csv(tmp / "out" / name, keep_default_na=False, na_values=[""]),
                                      done.tables[name].reset_index(drop=True), check_dtype=False)
    ref = cocoeval_summarized(gt, dets)
    ar = [done.summary["coco"][k] for k in ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")]
    np.testing.assert_allclose(ar, ref.stats[6:12], rtol=0, atol=1e-12)
    assert done.summary["score_threshold"] == 0.4 and done.summary["run"]["confusion_iou"] == 0.45
    assert "threshold_metrics" in done.summary["protocol"] and "confusion" in done.summary["protocol"]
    point = done.tables[DETECTIONS_THRESHOLDS_CSV]
    fixed = point[(point["threshold"] == "fixed") & (point["category_id"] == -1) & (point["iou"] == 0.5)].iloc[0]
    check_row(fixed, *reference_counts(gt, dets, 0.5, 0.4)[-1])
    confusion = done.tables[DETECTIONS_CONFUSION_CSV]
    assert set(confusion["iou_threshold"]) == {0.45} and set(confusion["score_threshold"]) == {0.4}


def test_thresholds_are_checked_and_part_of_the_folder(analysed, tmp_path):
    from dhanalysis.folders import FolderTaken

    gt, dets, _, tmp = analysed
    with pytest.raises(DHError, match="score_threshold must be a number in \\[0, 1\\], got 1.5"):
        detections.compute_detections(tmp / "gt.json", tmp / "dets.json", score_threshold=1.5, progress=lambda s: None)
    with pytest.raises(FolderTaken, match="score_threshold"):
        detections.compute_detections(tmp / "gt.json", tmp / "dets.json", tmp / "out", replicates=0,
                                      score_threshold=0.5, confusion_iou=0.45, progress=lambda s: None)


def test_cli_flags_are_checked(analysed, tmp_path, capsys):
    from dhanalysis.cli import main

    _, _, _, tmp = analysed
    assert main(["detections", "--gt", str(tmp / "gt.json"), "--results", str(tmp / "dets.json"), "--out",
                 str(tmp_path / "o"), "--score-threshold", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--score-threshold: must be a number in [0, 1], got 2" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_confusion_figure_draws_from_the_folder(analysed, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from dhanalysis.figures.render import render_all

    _, _, _, tmp = analysed
    written = render_all(tmp / "out", tmp_path, only=["det-confusion"], formats=("png",), log=lambda s: None)
    assert [p.name for p in written if p.suffix == ".png"] == ["det-confusion.png"]
    assert (tmp_path / "det-confusion.png").stat().st_size > 1000
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "det-confusion.csv"),
                                  pd.read_csv(tmp / "out" / DETECTIONS_CONFUSION_CSV))

"""`dhanalysis detections` against independent references: pycocotools' COCOeval (matching, AP), scipy (correlations),
tidecv (TIDE's ΔAPs), known answers (perfect detections), and every bad input's one line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import stats

from dhanalysis.metrics import alignment, coco_analyze, detections
from dhanalysis.stats.bootstrap import interval, replicate_counts
from dhanalysis.errors import DHError
from dhanalysis.folders import FolderTaken


# ------------------------------------------------------------------------------------------------ synthetic COCO files
def make_gt(seed: int = 0, images: int = 30, classes: int = 4, crowd: float = 0.08) -> dict:
    """Objects of all three size groups, some crowds, annotation areas that differ from the box area (as COCO's
    mask areas do), non-contiguous category ids and two supercategories."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 10 + 3 * k, "name": f"c{k}", "supercategory": f"s{k // 2}"} for k in range(classes)]
    imgs, anns = [], []
    for i in range(images):
        imgs.append({"id": 100 + i, "width": 400, "height": 300, "file_name": f"{i}.jpg"})
        for _ in range(rng.integers(0, 6)):
            s = rng.choice([12, 50, 130]) * rng.uniform(0.6, 1.4)
            w, h = s * rng.uniform(0.7, 1.3), s * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": cats[rng.integers(classes)]["id"],
                         "bbox": [x, y, w, h], "area": w * h * rng.uniform(0.7, 1.0),
                         "iscrowd": int(rng.random() < crowd),
                         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})  # tidecv reads polygons
    return {"images": imgs, "annotations": anns, "categories": cats}


def jitter(rng, box, shift):
    x, y, w, h = box
    j = rng.normal(0, shift, 4)
    return [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])]


def make_dets(gt: dict, seed: int = 0, shift: float = 0.15, swap: float = 0.15, dup: float = 0.15,
              background: float = 1.0, miss: float = 0.1) -> list[dict]:
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if rng.random() < miss:
            continue
        c = a["category_id"] if rng.random() >= swap else int(rng.choice(cats))
        dets.append({"image_id": a["image_id"], "category_id": c, "bbox": jitter(rng, a["bbox"], shift),
                     "score": float(rng.uniform(0.05, 1))})
        if rng.random() < dup:
            dets.append({"image_id": a["image_id"], "category_id": c, "bbox": jitter(rng, a["bbox"], shift),
                         "score": float(rng.uniform(0, 1))})
    for im in gt["images"]:
        for _ in range(rng.poisson(background)):
            w, h = rng.uniform(5, 100, 2)
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)),
                         "bbox": [rng.uniform(0, 300), rng.uniform(0, 200), w, h], "score": float(rng.uniform(0, .6))})
    return dets


def perfect(gt: dict) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
             "score": float(rng.uniform(0.5, 1))} for a in gt["annotations"] if not a["iscrowd"]]


SCENARIOS = {  # the generated detection sets TIDE is compared on
    "shifted": dict(shift=0.3, swap=0, dup=0, background=0, miss=0),
    "swapped": dict(shift=0.03, swap=0.5, dup=0, background=0, miss=0),
    "duplicates": dict(shift=0.05, swap=0, dup=0.6, background=0, miss=0),
    "background": dict(shift=0.03, swap=0, dup=0, background=3.0, miss=0),
    "misses": dict(shift=0.03, swap=0, dup=0, background=0, miss=0.5),
    "mixed": dict(),
    "mixed-loose": dict(shift=0.25, swap=0.3, dup=0.3, background=2.0, miss=0.2),
}


def write(tmp_path: Path, gt: dict, dets) -> tuple[Path, Path]:
    gt_path, det_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    det_path.write_text(json.dumps(dets))
    return gt_path, det_path


def reference_eval(gt: dict, dets: list[dict], scores=None) -> COCOeval:
    """A plain COCOeval with its default parameters."""
    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        records = [dict(d, score=float(s)) for d, s in zip(dets, scores)] if scores is not None else dets
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(records))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU in float64, written out (the reference for pycocotools' box IoU)."""
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    return inter / (a[:, 2:].prod(1)[:, None] + b[:, 2:].prod(1)[None] - inter)


def reference_best_iou(gt: dict, dets: list[dict]) -> np.ndarray:
    """IoU of each detection with its best non-crowd ground truth of the same class (0 when none)."""
    out = np.zeros(len(dets))
    for i, d in enumerate(dets):
        boxes = [a["bbox"] for a in gt["annotations"] if a["image_id"] == d["image_id"]
                 and a["category_id"] == d["category_id"] and not a["iscrowd"]]
        if boxes:
            out[i] = iou_xywh(np.asarray([d["bbox"]]), np.asarray(boxes)).max()
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mixed")
    gt = make_gt(1)
    dets = make_dets(gt, 1)
    gt_path, det_path = write(tmp, gt, dets)
    done = detections.compute_detections(gt_path, det_path, tmp / "out", replicates=30, progress=lambda s: None)
    return gt, dets, done, tmp


# ------------------------------------------------------------------------------------------------ matching and AP
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_is_cocoeval_at_50_and_75(tmp_path, seed):
    gt = make_gt(seed, crowd=0.15)
    dets = make_dets(gt, seed)
    inputs = detections.read_inputs(*write(tmp_path, gt, dets))
    ev = detections.coco_eval(inputs, inputs.results["score"].to_numpy(), (*detections.COCO_IOUS, detections.EXTRA_IOU))
    table = detections.detection_table(inputs, ev, np.full(len(dets), ""))
    ref = reference_eval(gt, dets)
    p = ref.params
    expected = {50: np.zeros(len(dets), bool), 75: np.zeros(len(dets), bool)}
    ignored = {50: np.zeros(len(dets), bool), 75: np.zeros(len(dets), bool)}
    for e in ref.evalImgs[:len(p.catIds) * len(p.areaRng) * len(p.imgIds)]:
        if e is None or e["aRng"] != p.areaRng[0]:
            continue
        for t, ti in ((50, 0), (75, 5)):
            for did, m, ig in zip(e["dtIds"], e["dtMatches"][ti], e["dtIgnore"][ti]):
                expected[t][did - 1] = m > 0 and not ig
                ignored[t][did - 1] = bool(ig)
    assert table["tp_50"].any() and table["tp_75"].any() and ignored[50].any()  # the case has crowd-ignored ones
    for t in (50, 75):
        np.testing.assert_array_equal(table[f"tp_{t}"].to_numpy(bool), expected[t])
        np.testing.assert_array_equal(table[f"ignored_{t}"].to_numpy() == True, ignored[t])  # noqa: E712
    metrics = detections.ap_metrics(ev)
    np.testing.assert_allclose([metrics[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")], ref.stats[:6],
                               atol=1e-12)
    np.testing.assert_allclose(table["iou"], reference_best_iou(gt, dets), atol=1e-9)


def test_oracle_ap_is_cocoeval_with_iou_scores(mixed):
    gt, dets, done, _ = mixed
    oracle = done.tables["det_oracle_ap.csv"].set_index("scoring")
    iou = reference_best_iou(gt, dets)
    for name, scores in (("iou", iou), ("score_x_iou", np.array([d["score"] for d in dets]) * iou)):
        ref = reference_eval(gt, dets, scores)
        np.testing.assert_allclose(oracle.loc[name, ["AP", "AP50", "AP75"]].to_numpy(float), ref.stats[[0, 1, 2]],
                                   atol=1e-12)
    assert oracle.loc["score", "AP"] == pytest.approx(reference_eval(gt, dets).stats[0], abs=1e-12)


# ------------------------------------------------------------------------------------------------ alignment
def test_correlations_equal_scipy(mixed):
    gt, dets, done, _ = mixed
    table, corr = done.tables["detections.csv"], done.tables["det_alignment.csv"]
    iou, score = reference_best_iou(gt, dets), np.array([d["score"] for d in dets])
    row = corr[(corr["score_field"] == "score") & (corr["grouping"] == "all")].iloc[0]
    assert row["pearson"] == pytest.approx(stats.pearsonr(iou, score)[0], abs=1e-9)
    assert row["spearman"] == pytest.approx(stats.spearmanr(iou, score)[0], abs=1e-9)
    assert row["kendall"] == pytest.approx(stats.kendalltau(iou, score)[0], abs=1e-9)
    for size in ("small", "medium"):
        part = (table["size"] == size).to_numpy()
        row = corr[(corr["grouping"] == "size") & (corr["group"] == size)].iloc[0]
        assert row["n"] == part.sum()
        assert row["kendall"] == pytest.approx(stats.kendalltau(iou[part], score[part])[0], abs=1e-9)
    cls = corr[corr["grouping"] == "class"]
    assert set(cls["group"]) == {c["name"] for c in gt["categories"]}


def test_bootstrap_resamples_images(mixed):
    """The interval is the percentile interval of the statistic recomputed on images drawn with replacement."""
    gt, dets, done, _ = mixed
    table = done.tables["detections.csv"]
    images, pos = np.unique(table["image_id"], return_inverse=True)
    counts = replicate_counts(len(images), 30, 0)
    x, s = table["iou"].to_numpy(), table["score"].to_numpy()
    draws = {"pearson": [], "spearman": [], "kendall": []}
    for w in counts:
        idx = np.concatenate([np.flatnonzero(pos == i).repeat(int(c)) for i, c in enumerate(w)])
        for name, f in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
            draws[name].append(f(x[idx], s[idx])[0])
    row = done.tables["det_alignment.csv"].iloc[0]
    for name, values in draws.items():
        np.testing.assert_allclose([row[f"{name}_lo"], row[f"{name}_hi"]], interval(np.array(values)), atol=1e-9)
        assert row[f"{name}_lo"] < row[name] < row[f"{name}_hi"]


def test_bins_and_histogram_count_every_detection(mixed):
    _, dets, done, _ = mixed
    table, bins, hist = (done.tables[k] for k in ("detections.csv", "det_alignment_bins.csv",
                                                  "det_alignment_hist.csv"))
    assert hist["count"].sum() == len(dets) and bins[bins["size"] == "all"]["n"].sum() == len(dets)
    b = np.minimum((table["iou"] * 20).astype(int), 19)
    high = table["score"][b == b.max()]
    row = bins[(bins["size"] == "all") & (bins["bin"] == b.max())].iloc[0]
    assert row["score_mean"] == pytest.approx(high.mean()) and row["score_std"] == pytest.approx(high.std(ddof=0))


def test_score_field_is_analysed_like_the_score(tmp_path):
    gt = make_gt(3)
    dets = make_dets(gt, 3)
    rng = np.random.default_rng(0)
    for d in dets:
        d["fc_score"] = float(rng.uniform())
    done = detections.compute_detections(*write(tmp_path, gt, dets), score_fields=["fc_score"], replicates=0,
                                         progress=lambda s: None)
    corr = done.tables["det_alignment.csv"]
    row = corr[(corr["score_field"] == "fc_score") & (corr["grouping"] == "all")].iloc[0]
    iou = reference_best_iou(gt, dets)
    assert row["pearson"] == pytest.approx(stats.pearsonr(iou, [d["fc_score"] for d in dets])[0], abs=1e-9)
    assert "fc_score" in done.tables["detections.csv"]


def test_calibration_and_lrp_tables_add_up(mixed):
    """det_calibration.csv's D-ECE bins (equal-width, the default) hold every counted detection of the per-detection
    table and recompute the summary's D-ECE; det_lrp.csv's "all" row is the summary's moLRP. (Each measure equals
    its own reference in tests/test_calibration.py and tests/test_lrp.py.)"""
    _, dets, done, _ = mixed
    cal, table = done.tables["det_calibration.csv"], done.tables["detections.csv"]
    part = cal[(cal["measure"] == "D-ECE") & (cal["iou"] == 0.5)]
    kept = table[(table["ignored_50"] == False) & table["evaluated"]]  # noqa: E712
    assert (part["binning"] == "equal-width").all() and done.summary["calibration_bins"] == "equal-width"
    assert part["n"].sum() == len(kept) and (part["bin_hi"] - part["bin_lo"]).round(12).eq(0.1).all()
    ece = float((part["n"] / part["n"].sum() * (part["score_mean"] - part["accuracy"]).abs()).sum())
    assert done.summary["ece_50"] == pytest.approx(ece, abs=1e-12)
    assert done.summary["mce_50"] == pytest.approx(part["gap"].max(), abs=1e-12)
    assert (part["accuracy"] * part["n"]).sum() == pytest.approx(kept["tp_50"].sum())
    assert {"ece_75", "mce_75", "laece"} <= set(done.summary) and (cal["measure"] == "LaECE").any()
    lrp_rows = done.tables["det_lrp.csv"].set_index("category")
    assert lrp_rows.loc["all", "olrp"] == pytest.approx(done.summary["olrp"])
    assert set(lrp_rows.index) == {"all", *(c["name"] for c in mixed[0]["categories"])}


def test_calibration_bins_equal_count_option(mixed, tmp_path):
    gt, dets, done, tmp = mixed
    other = detections.compute_detections(tmp / "gt.json", tmp / "dets.json", replicates=0, progress=lambda s: None,
                                          calibration_bins="equal-count")
    cal = other.tables["det_calibration.csv"]
    part = cal[(cal["measure"] == "D-ECE") & (cal["iou"] == 0.5)]
    assert (part["binning"] == "equal-count").all() and part["n"].max() - part["n"].min() <= 2  # distinct scores
    assert other.summary["laece"] == done.summary["laece"] and other.summary["olrp"] == done.summary["olrp"]
    with pytest.raises(DHError, match="equal-width, equal-count"):
        detections.compute_detections(tmp / "gt.json", tmp / "dets.json", tmp_path / "x", replicates=0,
                                      progress=lambda s: None, calibration_bins="equal-mass")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ TIDE
def tidecv_errors(gt_path: Path, det_path: Path) -> tuple[dict[str, float], float]:
    tidecv = pytest.importorskip("tidecv")
    tide = tidecv.TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        tide.evaluate(tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(det_path), name="dets"),
                      mode=tidecv.TIDE.BOX)
    return {**tide.get_main_errors()["dets"], **tide.get_special_errors()["dets"]}, tide.runs["dets"].ap


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_tide_equals_tidecv(tmp_path, scenario):
    gt = make_gt(7)
    dets = make_dets(gt, 7, **SCENARIOS[scenario])
    gt_path, det_path = write(tmp_path, gt, dets)
    expected, ap = tidecv_errors(gt_path, det_path)
    done = detections.compute_detections(gt_path, det_path, replicates=0, progress=lambda s: None)
    ours = done.tables["det_tide.csv"].set_index("error")["delta_ap"] * 100  # tidecv speaks AP points
    assert done.summary["tide_ap50"] * 100 == pytest.approx(ap, abs=0.1)
    for error, value in expected.items():
        assert ours[error] == pytest.approx(value, abs=0.1), error  # 1e-3 AP
    assert max(expected.values()) > 0.5  # the scenario makes errors worth fixing


def test_tide_of_perfect_detections_equals_tidecv(tmp_path):
    gt = make_gt(8)
    gt_path, det_path = write(tmp_path, gt, perfect(gt))
    expected, ap = tidecv_errors(gt_path, det_path)
    done = detections.compute_detections(gt_path, det_path, replicates=0, progress=lambda s: None)
    ours = done.tables["det_tide.csv"].set_index("error")["delta_ap"] * 100
    assert ap == pytest.approx(100.0) and done.summary["tide_ap50"] == pytest.approx(1.0)
    for error, value in expected.items():
        assert ours[error] == pytest.approx(value, abs=0.1) and value == pytest.approx(0.0, abs=1e-9), error


def test_tide_error_types_match_their_scenario(tmp_path):
    gt = make_gt(7, crowd=0)
    done = detections.compute_detections(*write(tmp_path, gt, make_dets(gt, 7, **SCENARIOS["swapped"])),
                                         replicates=0, progress=lambda s: None)
    errors = done.tables["detections.csv"]["tide"].value_counts()
    assert errors.index[0] in ("tp", "Cls") and errors.get("Cls", 0) > 5 and errors.get("Bkg", 0) == 0


# ------------------------------------------------------------------------------------------------ known answers
def test_perfect_detections(tmp_path):
    gt = make_gt(5)
    done = detections.compute_detections(*write(tmp_path, gt, perfect(gt)), replicates=0, progress=lambda s: None)
    assert done.summary["coco"]["AP"] == pytest.approx(1.0)
    assert done.tables["det_oracle_ap.csv"][["AP", "AP50", "AP75"]].to_numpy() == pytest.approx(1.0)
    assert done.tables["det_tide.csv"]["delta_ap"].abs().max() == pytest.approx(0.0, abs=1e-12)
    analyze = done.tables["det_analyze.csv"]
    assert analyze["AP"].to_numpy() == pytest.approx(1.0)
    assert set(done.tables["detections.csv"]["tide"]) == {"tp"}


def two_class_case(sibling: bool) -> tuple[dict, list[dict]]:
    """Class A's objects detected exactly; class B's objects also detected as A, scored higher (confusions).
    B is A's sibling (same supercategory) or not."""
    cats = [{"id": 1, "name": "a", "supercategory": "x"}, {"id": 2, "name": "b", "supercategory": "x" if sibling
                                                             else "y"}]
    imgs, anns, dets = [], [], []
    for i in range(6):
        imgs.append({"id": i, "width": 300, "height": 300, "file_name": f"{i}.jpg"})
        for j, cat in enumerate((1, 2)):
            box = [10.0 + 120 * j, 20.0 + 5 * i, 80.0, 60.0]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box, "area": 4800.0,
                         "iscrowd": 0})
            dets.append({"image_id": i, "category_id": 1, "bbox": box, "score": 0.4 + 0.05 * i + 0.3 * (cat == 2)})
    return {"images": imgs, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("sibling", [True, False])
def test_analyze_forgives_confusions_by_supercategory(tmp_path, sibling):
    gt, dets = two_class_case(sibling)
    done = detections.compute_detections(*write(tmp_path, gt, dets), replicates=0, progress=lambda s: None)
    ap = done.tables["det_analyze.csv"].query("category == 'a'").set_index("curve")["AP"]
    ref = reference_eval(gt, dets)
    per_class_50 = ref.eval["precision"][0, :, 0, 0, -1].mean()
    assert ap["C50"] == pytest.approx(per_class_50) and ap["C50"] < 0.9
    assert ap["Oth"] == pytest.approx(1.0)
    assert ap["Sim"] == pytest.approx(1.0 if sibling else ap["Loc"])
    assert ap["BG"] == ap["FN"] == pytest.approx(1.0)


def test_analyze_loc_forgives_poor_boxes(tmp_path):
    gt, _ = two_class_case(sibling=True)
    dets = []
    for a in gt["annotations"]:  # a box shifted by half its width: IoU 1/3
        x, y, w, h = a["bbox"]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + w / 2, y, w, h],
                     "score": 0.5 + 0.01 * a["id"]})
    done = detections.compute_detections(*write(tmp_path, gt, dets), replicates=0, progress=lambda s: None)
    ap = done.tables["det_analyze.csv"].query("category == 'all'").set_index("curve")["AP"]
    assert ap["C50"] == pytest.approx(0.0) and ap["Loc"] == pytest.approx(1.0)
    assert done.tables["det_tide.csv"].set_index("error").loc["Loc", "count"] == len(dets)


def test_analyze_c75_c50_are_cocoevals(mixed):
    gt, dets, done, _ = mixed
    ap = done.tables["det_analyze.csv"].query("category == 'all'").set_index("curve")["AP"]
    ref = reference_eval(gt, dets)
    assert ap["C50"] == pytest.approx(ref.stats[1]) and ap["C75"] == pytest.approx(ref.stats[2])
    assert list(ap.index) == list(coco_analyze.CURVES)
    assert (np.diff(ap.to_numpy()) >= -1e-12).all()  # each curve forgives more


# ------------------------------------------------------------------------------------------------ bad input
def _entry(dets, i, **change):
    out = [dict(d) for d in dets]
    out[i] = {**out[i], **change}
    return out


BAD = {
    "missing key": (lambda d: [{k: v for k, v in x.items() if k != "score"} if i in (2, 5) else x
                               for i, x in enumerate(d)], "entry 2 has no 'score'; 2 entries"),
    "unknown image": (lambda d: _entry(d, 3, image_id=999), "entry 3 has image_id 999"),
    "unknown category": (lambda d: _entry(d, 1, category_id=4), "entry 1 has category_id 4"),
    "nan box": (lambda d: _entry(d, 4, bbox=[1.0, float("nan"), 3.0, 4.0]), "entry 4 has bbox"),
    "negative box": (lambda d: _entry(d, 0, bbox=[1.0, 2.0, -3.0, 4.0]), "negative width"),
    "short box": (lambda d: _entry(d, 0, bbox=[1.0, 2.0]), "not four numbers"),
    "score above 1": (lambda d: _entry(d, 6, score=1.5), "entry 6 has score 1.5"),
    "negative score": (lambda d: _entry(d, 2, score=-0.1), "entry 2 has score -0.1, not a number in [0, 1]"),
    "nan score": (lambda d: _entry(d, 2, score=float("nan")), "entry 2 has score nan"),
    "text score": (lambda d: _entry(d, 5, score="high"), "entry 5 has score 'high'"),
    "empty": (lambda d: [], "holds no detections"),
    "not a list": (lambda d: {"annotations": d}, "not a list"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_results_are_one_line_and_write_nothing(tmp_path, case, capsys):
    from dhanalysis.cli import main

    gt = make_gt(2)
    change, words = BAD[case]
    gt_path, det_path = write(tmp_path, gt, change(make_dets(gt, 2)))
    with pytest.raises(DHError, match="results file") as info:
        detections.compute_detections(gt_path, det_path, tmp_path / "out", progress=lambda s: None)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert main(["detections", "--gt", str(gt_path), "--results", str(det_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dhanalysis: error: --results ") and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_missing_files_and_bad_ground_truth(tmp_path):
    gt = make_gt(2)
    gt_path, det_path = write(tmp_path, gt, make_dets(gt, 2))
    with pytest.raises(DHError, match="ground-truth file .* does not exist"):
        detections.read_inputs(tmp_path / "none.json", det_path)
    with pytest.raises(DHError, match="results file .* does not exist"):
        detections.read_inputs(gt_path, tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DHError, match="not valid JSON"):
        detections.read_inputs(tmp_path / "bad.json", det_path)
    (tmp_path / "noimg.json").write_text(json.dumps({"annotations": [], "categories": []}))
    with pytest.raises(DHError, match="no 'images' list"):
        detections.read_inputs(tmp_path / "noimg.json", det_path)
    with pytest.raises(DHError, match="has no 'head_score'"):
        detections.read_inputs(gt_path, det_path, ["head_score"])


# ------------------------------------------------------------------------------------------------ folder, figures
def test_folder_is_claimed_and_resumed(mixed):
    gt, dets, done, tmp = mixed
    assert (tmp / "out" / "detections_summary.json").is_file() and done.paths
    again = detections.compute_detections(tmp / "gt.json", tmp / "dets.json", tmp / "out", replicates=30,
                                          progress=lambda s: pytest.fail("recomputed"))
    assert again.paths == [] and again.summary["coco"] == pytest.approx(done.summary["coco"])
    with pytest.raises(FolderTaken, match="replicates"):
        detections.compute_detections(tmp / "gt.json", tmp / "dets.json", tmp / "out", replicates=5,
                                      progress=lambda s: None)


def test_figures_draw_from_the_folder(mixed, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from dhanalysis.figures.render import render_all

    _, _, _, tmp = mixed
    keys = ["det-alignment", "det-analyze", "det-tide", "det-reliability"]
    written = render_all(tmp / "out", tmp_path, only=keys, formats=("png",), log=lambda s: None)
    pngs = [p for p in written if p.suffix == ".png"]
    assert sorted(p.stem for p in pngs) == sorted(keys) and all(p.stat().st_size > 1000 for p in pngs)
    # each figure's table beside it is the table the analysis wrote
    beside = pd.read_csv(tmp_path / "det-tide.csv")
    pd.testing.assert_frame_equal(beside, pd.read_csv(tmp / "out" / "det_tide.csv"))
    lines: list[str] = []
    assert render_all(tmp_path / "empty", tmp_path / "f", only=keys, formats=("png",), log=lines.append) == []
    assert all("dhanalysis detections" in line for line in lines)


def test_alignment_correlations_helper_is_nan_when_constant():
    assert np.isnan(alignment.correlations(np.ones(5), np.arange(5.0))["pearson"])
    assert pd.isna(alignment.correlations(np.arange(2.0), np.arange(2.0))["kendall"])


@pytest.mark.parametrize("n, levels", [(200, 6), (37, 1000), (1000, 3)])
def test_weighted_replicates_equal_scipy_on_resampled_arrays(n, levels):
    """Each correlation of a resample, computed from weights, equals scipy's on the repeated arrays (ties too)."""
    rng = np.random.default_rng(n)
    x = rng.integers(0, levels, n) / levels  # ties, as IoU 0 is for every background detection
    s = rng.integers(0, 9, n) / 8.0
    w = rng.multinomial(n, np.full(n, 1 / n), size=4).astype(float)
    got = alignment.ResamplePlan(x, s, np.arange(n)).replicates(w)
    for b in range(4):
        idx = np.repeat(np.arange(n), w[b].astype(int))
        assert got["pearson"][b] == pytest.approx(stats.pearsonr(x[idx], s[idx])[0], abs=1e-10)
        assert got["spearman"][b] == pytest.approx(stats.spearmanr(x[idx], s[idx])[0], abs=1e-10)
        assert got["kendall"][b] == pytest.approx(stats.kendalltau(x[idx], s[idx])[0], abs=1e-10)


def test_image_resamples_equal_scipy_on_the_drawn_images():
    """A resample of images (each drawn image brings all its points, some images twice, some not at all) has
    scipy's correlations of the points of the drawn images; a resample whose points are all equal in IoU is NaN."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 30, 400)  # unsorted, uneven: 30 images of ~13 points
    x = rng.integers(0, 20, 400) / 20
    s = rng.random(400).round(2)
    counts = rng.multinomial(30, np.full(30, 1 / 30), size=5).astype(float)
    got = alignment.ResamplePlan(x, s, images, 30).replicates(counts)
    for b in range(5):
        idx = np.concatenate([np.flatnonzero(images == i).repeat(int(k)) for i, k in enumerate(counts[b])])
        assert got["pearson"][b] == pytest.approx(stats.pearsonr(x[idx], s[idx])[0], abs=1e-10)
        assert got["spearman"][b] == pytest.approx(stats.spearmanr(x[idx], s[idx])[0], abs=1e-10)
        assert got["kendall"][b] == pytest.approx(stats.kendalltau(x[idx], s[idx])[0], abs=1e-10)
    flat = np.where(images == 3, 0.5, x)  # image 3's points all at IoU 0.5: a resample of image 3 alone is constant
    only = np.zeros((1, 30))
    only[0, 3] = 30
    assert all(np.isnan(v[0]) for v in alignment.ResamplePlan(flat, s, images, 30).replicates(only).values())


@pytest.mark.slow
def test_a_trained_models_detections(tmp_path):
    """A model trained here writes its detections with each head's score (eval); on them TIDE equals tidecv and the
    per-head fields are analysed beside the score."""
    from helpers import tiny_config

    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.data.synth import make_synth_dataset
    from dhanalysis.engine.evaluate import evaluate
    from dhanalysis.engine.train import train
    from dhanalysis.model.checkpoint import load_checkpoint

    root = tmp_path / "synth"
    make_synth_dataset(root, num_train=6, num_val=6, image_size=96, seed=3)
    cfg = tiny_config("double-head-ext", f"data.root={root}", "data.num_workers=0", "model.num_classes=0",
                      "train.iterations=6", "train.ims_per_batch=2", "train.checkpoint_period=6",
                      "train.log_period=1", "train.warmup_iters=2", "train.steps=[5]", "model.score_thresh=0.0")
    model = load_checkpoint(train(cfg, tmp_path / "run", progress=False))
    evaluate(model, CocoDataset(root, "val"), modes=["complementary"], out=tmp_path / "ev", progress=False)
    gt = json.loads((root / "annotations" / "instances_val.json").read_text())
    for a in gt["annotations"]:  # tidecv reads every ground truth's segmentation: give it the box polygon
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    det_path = tmp_path / "ev" / "detections_complementary.json"
    dets = json.loads(det_path.read_text())
    assert len(dets) > 20 and {"fc_score", "conv_score"} <= set(dets[0])
    expected, ap = tidecv_errors(gt_path, det_path)
    done = detections.compute_detections(gt_path, det_path, tmp_path / "out", score_fields=["fc_score", "conv_score"],
                                         replicates=10, progress=lambda s: None)
    ours = done.tables["det_tide.csv"].set_index("error")["delta_ap"] * 100
    assert done.summary["tide_ap50"] * 100 == pytest.approx(ap, abs=0.1)
    for error, value in expected.items():
        assert ours[error] == pytest.approx(value, abs=0.1), error
    corr = done.tables["det_alignment.csv"]
    assert set(corr["score_field"]) == {"score", "fc_score", "conv_score"}


def test_groups_too_small_for_a_correlation(tmp_path):
    """A size group without detections (or with two) is a NaN row, not an error."""
    gt = make_gt(2)
    dets = [d for d in make_dets(gt, 2) if d["bbox"][2] * d["bbox"][3] < 32 ** 2][:2]
    table = detections.compute_detections(*write(tmp_path, gt, dets), replicates=5,
                                          progress=lambda s: None).tables["det_alignment.csv"]
    assert table[["pearson", "kendall_lo"]].isna().all().all() and (table["n"] <= 2).all()


def test_analyze_sim_and_oth_equal_the_per_class_evaluation(mixed):
    """The classic per-class way (one COCOeval per class over the whole ground truth, the other classes' objects
    relabelled to it and ignored) gives the same Sim and Oth curves as our single runs with copies where needed."""
    gt, dets, done, _ = mixed
    ours = done.tables["det_analyze.csv"].set_index(["category", "curve"])["AP"]
    sup = {c["id"]: c["supercategory"] for c in gt["categories"]}
    for cat in gt["categories"]:
        k = cat["id"]
        for curve, others in (("Sim", {j for j in sup if j != k and sup[j] == sup[k]}), ("Oth", set(sup) - {k})):
            relabelled = json.loads(json.dumps(gt))
            for a in relabelled["annotations"]:
                if a["category_id"] in others:
                    a["category_id"], a["area"] = k, -1.0
            coco = COCO()
            coco.dataset = relabelled
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
                ev = COCOeval(coco, coco.loadRes([d for d in dets if d["category_id"] == k]), "bbox")
                ev.params.iouThrs, ev.params.maxDets = np.array([0.1]), [100]
                ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
                ev.evaluate()
                ev.accumulate()
            prec = ev.eval["precision"][0, :, ev.params.catIds.index(k), 0, 0]
            assert ours[(cat["name"], curve)] == pytest.approx(prec.mean(), abs=1e-12), (cat["name"], curve)

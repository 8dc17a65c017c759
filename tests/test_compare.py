"""`dhanalysis compare` and the bootstrap replicates behind it: a detector against a reordered copy of itself differs
by exactly 0; boxes shifted by a fifth of their width lose AP75 and AP with intervals below 0; the point values are
pycocotools' COCOeval stats; a replicate is every metric of the dataset its draw makes (its images copied under new
ids), for pycocotools and for the whole analysis run on that dataset; the folder is claimed; the figure draws the
table."""

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

from dhanalysis.metrics import compare, detections, replicates
from dhanalysis.stats.bootstrap import holm, positions_of, replicate_counts
from dhanalysis.cli import main
from dhanalysis.folders import FolderTaken

from refusals import refused


# ------------------------------------------------------------------------------------------------ generated files
def make_gt(seed: int = 0, images: int = 40, classes: int = 3) -> dict:
    """Objects of the three size groups, a few crowds, annotation areas below the box area (as COCO's masks)."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 3 + 2 * k, "name": f"c{k}"} for k in range(classes)]
    imgs, anns = [], []
    for i in range(images):
        imgs.append({"id": 50 + 7 * i, "width": 400, "height": 300})
        for _ in range(rng.integers(0, 6)):
            s = rng.choice([14, 50, 130]) * rng.uniform(0.7, 1.3)
            w, h = s * rng.uniform(0.7, 1.3), s * rng.uniform(0.7, 1.3)
            anns.append({"id": len(anns) + 1, "image_id": 50 + 7 * i, "category_id": cats[rng.integers(classes)]["id"],
                         "bbox": [rng.uniform(0, 400 - w), rng.uniform(0, 300 - h), w, h],
                         "area": w * h * rng.uniform(0.8, 1.0), "iscrowd": int(rng.random() < 0.05)})
    return {"images": imgs, "annotations": anns, "categories": cats}


def make_dets(gt: dict, seed: int = 0, shift: float = 0.06) -> list[dict]:
    """A jittered box on most objects (some duplicated, some of another class) and background boxes; every score
    distinct, so no order of equal scores is left to the file."""
    rng = np.random.default_rng(seed + 100)
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        for _ in range(1 + int(rng.random() < 0.4)):
            if rng.random() < 0.1:
                continue
            x, y, w, h = a["bbox"]
            j = rng.normal(0, shift, 4)
            c = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
            dets.append({"image_id": a["image_id"], "category_id": c,
                         "bbox": [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])]})
    for im in gt["images"]:
        for _ in range(rng.poisson(1.0)):
            w, h = rng.uniform(8, 90, 2)
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)),
                         "bbox": [rng.uniform(0, 300), rng.uniform(0, 200), w, h]})
    for d, s in zip(dets, rng.permutation(len(dets))):
        d["score"] = float((s + rng.uniform(0.1, 0.9)) / len(dets))
    return dets


def shifted(dets: list[dict], by: float = 0.2) -> list[dict]:
    """The same detections with every box moved right by ``by`` of its width."""
    return [dict(d, bbox=[d["bbox"][0] + by * d["bbox"][2], *d["bbox"][1:]]) for d in dets]


def write(folder: Path, gt: dict, **results: list[dict]) -> tuple[Path, list[Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gt.json").write_text(json.dumps(gt))
    paths = []
    for name, dets in results.items():
        paths.append(folder / f"{name}.json")
        paths[-1].write_text(json.dumps(dets))
    return folder / "gt.json", paths


def inputs_of(folder: Path, gt: dict, dets: list[dict]) -> detections.DetectionInputs:
    gt_path, (path,) = write(folder, gt, dets=dets)
    return detections.read_inputs(gt_path, path)


def coco_stats(gt: dict, dets: list[dict]) -> np.ndarray:
    """pycocotools' COCOeval stats (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl)."""
    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def drawn_dataset(gt: dict, dets: list[dict], image_ids: np.ndarray, counts: np.ndarray) -> tuple[dict, list[dict]]:
    """The dataset one replicate stands for: each drawn image as often as drawn, every copy under a new id."""
    anns, found = {}, {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for d in dets:
        found.setdefault(d["image_id"], []).append(d)
    out = {"images": [], "annotations": [], "categories": gt["categories"]}
    out_dets = []
    for new_id, pos in enumerate(positions_of(counts), 1):
        old = int(image_ids[pos])
        out["images"].append({"id": new_id, "width": 400, "height": 300})
        for a in anns.get(old, []):
            out["annotations"].append({**a, "id": len(out["annotations"]) + 1, "image_id": new_id})
        out_dets += [{**d, "image_id": new_id} for d in found.get(old, [])]
    return out, out_dets


# ------------------------------------------------------------------------------------------------ the comparison
@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    gt = make_gt(1)
    dets = make_dets(gt, 1)
    return tmp, gt, dets


def test_a_reordered_copy_differs_by_exactly_zero(case):
    tmp, gt, dets = case
    order = np.random.default_rng(5).permutation(len(dets))
    copy = [{**dets[i], "id": int(k)} for k, i in enumerate(order)]  # reordered, with ids of its own
    gt_path, paths = write(tmp / "self", gt, a=dets, b=copy)
    done = compare.compute_compare(gt_path, paths, num_replicates=200, progress=lambda s: None)
    t = done.table
    assert list(t["metric"]) == [m.name for m in replicates.METRICS]
    measured = t[np.isfinite(t["a"])]
    assert len(measured) >= len(t) - 2  # every metric has a value on this case (perhaps not within-object ones)
    assert (measured["difference"] == 0).all() and (measured["a"] == measured["b"]).all()
    assert (measured["ci_low"] == 0).all() and (measured["ci_high"] == 0).all()  # every replicate differs by 0
    assert (measured["p_value"] == 1).all() and not t["holm_reject"].any()
    assert (t["n_images"] == len(gt["images"])).all()


def test_boxes_shifted_by_a_fifth_of_their_width_lose_ap75_and_ap(case):
    tmp, gt, dets = case
    gt_path, paths = write(tmp / "shift", gt, a=dets, b=shifted(dets))
    t = compare.compute_compare(gt_path, paths, num_replicates=200, progress=lambda s: None).table.set_index("metric")
    for metric in ("AP75", "AP", "AR100"):
        assert t.at[metric, "b"] < t.at[metric, "a"]
        assert t.at[metric, "ci_high"] < 0, metric  # B − A, B shifted: the whole interval below 0
        assert t.at[metric, "p_value"] < 0.05
    assert t.at["tide_Loc", "ci_low"] > 0  # the AP lost to localisation errors grows
    assert t.at["olrp", "ci_low"] > 0  # and the LRP error with it
    # each detector's own interval comes from the same draws
    assert t.at["AP", "a_ci_low"] <= t.at["AP", "a"] <= t.at["AP", "a_ci_high"]
    assert t.at["AP", "b_ci_low"] <= t.at["AP", "b"] <= t.at["AP", "b_ci_high"]
    assert list(t["holm_reject"]) == holm(list(t["p_value"]))


def test_holm_rejects_the_lost_ap_with_enough_replicates(tmp_path):
    gt = make_gt(2, images=30)
    dets = make_dets(gt, 2)
    gt_path, paths = write(tmp_path, gt, a=dets, b=shifted(dets, 0.3))
    done = compare.compute_compare(gt_path, paths, num_replicates=1000, progress=lambda s: None)
    t = done.table.set_index("metric")
    assert done.summary["holm_can_reject"] and t.at["AP75", "holm_reject"] and t.at["AP", "holm_reject"]
    assert t.at["AP75", "p_value"] == pytest.approx(2 / 1001)  # every replicate below 0: the smallest p
    assert "AP" in done.summary["holm"]["rejected"]


def test_point_values_are_pycocotools_stats(case, tmp_path):
    _, gt, dets = case
    for name, found in (("a", dets), ("b", shifted(dets))):
        stats = coco_stats(gt, found)
        values = replicates.resample_file(inputs_of(tmp_path / name, gt, found)).values
        for i, metric in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
            assert values[metric] == pytest.approx(stats[i], abs=1e-12), (name, metric)
        assert values["AR100"] == pytest.approx(stats[8], abs=1e-12)


def test_point_values_are_the_detections_analysis(case, tmp_path):
    """TIDE and moLRP as `dhanalysis detections` reports them; D-ECE and the alignment measures up to rounding."""
    _, gt, dets = case
    gt_path, (path,) = write(tmp_path, gt, dets=dets)
    done = detections.compute_detections(gt_path, path, replicates=0, progress=lambda s: None)
    values = replicates.resample_file(detections.read_inputs(gt_path, path)).values
    tide_table = done.tables["det_tide.csv"].set_index("error")["delta_ap"]
    for error, delta in tide_table.items():
        assert values[f"tide_{error}"] == delta
    assert values["olrp"] == done.summary["olrp"]
    assert values["d_ece_50"] == pytest.approx(done.summary["ece_50"], abs=1e-12)
    table = done.tables["det_measures.csv"]
    overall = table[(table["grouping"] == "all")].set_index("measure")["pcc"]
    for m in replicates.ALIGNMENT_METRICS:
        assert values[m] == pytest.approx(overall[m], abs=1e-12, nan_ok=True), m


def test_every_image_once_is_the_point_value(case, tmp_path):
    _, gt, dets = case
    r = replicates.resample_file(inputs_of(tmp_path, gt, dets))
    once = r.replicates(np.ones((1, len(r.image_ids))))
    for m in replicates.METRICS:
        assert once[m.name][0] == pytest.approx(r.values[m.name], abs=1e-12, nan_ok=True), m.name


def test_a_replicate_is_pycocotools_on_the_drawn_images(case, tmp_path):
    """The bootstrap's AP of a draw = COCOeval on the dataset the draw makes (drawn images copied, new ids)."""
    _, gt, dets = case
    r = replicates.resample_file(inputs_of(tmp_path, gt, dets))
    counts = replicate_counts(len(r.image_ids), 3, seed=11)
    reps = r.replicates(counts)
    for b, row in enumerate(counts):
        assert row.max() > 1  # images drawn twice or more
        stats = coco_stats(*drawn_dataset(gt, dets, r.image_ids, row))
        for i, metric in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
            assert reps[metric][b] == pytest.approx(stats[i], abs=1e-12), (b, metric)
        assert reps["AR100"][b] == pytest.approx(stats[8], abs=1e-12)


def test_a_replicate_is_the_whole_analysis_of_the_drawn_images(case, tmp_path):
    """Every metric — TIDE, the alignment measures, D-ECE, moLRP included — of a draw equals the analysis run from
    scratch on the dataset the draw makes: the weighting by draw counts is resampling, not an approximation."""
    _, gt, dets = case
    r = replicates.resample_file(inputs_of(tmp_path / "all", gt, dets))
    counts = replicate_counts(len(r.image_ids), 2, seed=3)
    reps = r.replicates(counts)
    for b, row in enumerate(counts):
        drawn = replicates.resample_file(inputs_of(tmp_path / f"drawn{b}", *drawn_dataset(gt, dets, r.image_ids,
                                                                                             row))).values
        for m in replicates.METRICS:
            assert reps[m.name][b] == pytest.approx(drawn[m.name], abs=1e-9, nan_ok=True), (b, m.name)


def test_one_detector_intervals(case, tmp_path):
    _, gt, dets = case
    table = replicates.detector_intervals(inputs_of(tmp_path, gt, dets), replicates=100, seed=4)
    assert list(table.columns) == list(replicates.INTERVAL_COLUMNS)
    assert list(table["metric"]) == [m.name for m in replicates.METRICS]
    ap = table.set_index("metric").loc["AP"]
    assert ap["ci_low"] < ap["value"] < ap["ci_high"] and ap["n_images"] == len(gt["images"])


def test_bootstrap_p_value():
    assert compare.bootstrap_p_value(np.zeros(99)) == 1.0
    assert compare.bootstrap_p_value(np.full(99, 0.3)) == pytest.approx(2 / 100)
    assert compare.bootstrap_p_value(np.r_[np.full(90, -1.0), np.full(10, 1.0)]) == pytest.approx(2 * 11 / 101)
    assert np.isnan(compare.bootstrap_p_value(np.r_[np.full(60, np.nan), np.ones(40)]))


# ------------------------------------------------------------------------------------------------ command and folder
def test_command_writes_resumes_and_claims_its_folder(case, capsys):
    tmp, gt, dets = case
    gt_path, paths = write(tmp / "cli", gt, a=dets, b=shifted(dets))
    out = tmp / "cli" / "out"
    argv = ["compare", "--gt", gt_path, "--results", paths[0], "--results", paths[1], "--out", out,
            "--replicates", "50", "--names", "base", "moved"]
    assert main([str(a) for a in argv]) == 0
    table = pd.read_csv(out / "compare.csv")
    assert list(table.columns) == list(compare.COMPARE_COLUMNS)
    summary = json.loads((out / "compare_summary.json").read_text())
    assert summary["names"] == {"a": "base", "b": "moved"} and summary["difference"] == "b - a"
    assert not summary["holm_can_reject"]  # 50 replicates cannot pass Holm's first bar for 23 metrics
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    assert "nothing recomputed" in capsys.readouterr().out
    # another comparison in the folder: refused, one line, nothing touched; --overwrite replaces it
    message = refused([*argv[:-5], "--replicates", "60", "--names", "base", "moved"], capsys, out)
    assert "replicates: 50 vs 60" in message and "--overwrite" in message
    assert main([str(a) for a in [*argv[:-5], "--replicates", "60", "--names", "base", "moved", "--overwrite"]]) == 0
    assert json.loads((out / "compare_summary.json").read_text())["replicates"] == 60
    with pytest.raises(FolderTaken):
        compare.compute_compare(gt_path, paths, out, num_replicates=50, progress=lambda s: None)


def test_figures_draw_the_comparison(case, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from dhanalysis.figures.render import render_all

    tmp, gt, dets = case
    gt_path, paths = write(tmp / "fig", gt, a=dets, b=shifted(dets))
    out = tmp_path / "cmp"
    compare.compute_compare(gt_path, paths, out, num_replicates=30, progress=lambda s: None)
    written = render_all(out, tmp_path / "figs", only=["det-compare"], formats=("png",), log=lambda s: None)
    assert sorted(p.name for p in written) == ["det-compare.csv", "det-compare.png"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "figs" / "det-compare.csv"), pd.read_csv(out / "compare.csv"))


@pytest.mark.parametrize("fault, words", [
    ("once", "--results must be given twice"),
    ("same names", "--names must be two different"),
    ("replicates", "argument --replicates: must be an integer >= 2"),
    ("positive iou", "--positive-iou"),
])
def test_settings_are_refused_before_any_work(case, tmp_path, capsys, fault, words):
    tmp, gt, dets = case
    gt_path, paths = write(tmp / "settings", gt, a=dets, b=dets)
    argv = ["compare", "--gt", gt_path, "--results", paths[0], "--results", paths[1], "--out", tmp_path / "out"]
    argv = {"once": argv[:5] + argv[7:], "same names": [*argv, "--names", "x", "x"],
            "replicates": [*argv, "--replicates", "1"], "positive iou": [*argv, "--positive-iou", "0.33"]}[fault]
    assert words in refused(argv, capsys, tmp_path)
    assert not (tmp_path / "out").exists()


"""Bad inputs of `detections --gt`, `pcc --difficulty-from`, `figures` and `eval --ckpt`: each is refused with one
line that names the real cause (the file, the entry or line, the field), exit code 2, and nothing written.

A ground truth is checked as strictly as a results file: a bad one used to crash (a traceback) or, worse, move AP
without a word (unknown ids, NaN or empty boxes, an image listed twice).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dhanalysis.metrics import detections, tide
from dhanalysis.errors import DHError

from refusals import refused


# ------------------------------------------------------------------------------------------------ detections --gt
def small_gt() -> dict:
    """Three images, two classes (non-contiguous ids), six boxes, one of them a crowd."""
    cats = [{"id": 2, "name": "cat", "supercategory": "animal"}, {"id": 5, "name": "dog", "supercategory": "animal"}]
    images = [{"id": 10 + i, "width": 200, "height": 150, "file_name": f"{i}.jpg"} for i in range(3)]
    boxes = [(10, 2, [5, 5, 40, 30]), (10, 5, [60, 40, 50, 60]), (11, 2, [20, 20, 30, 30]),
             (11, 5, [100, 50, 40, 40]), (12, 2, [0, 0, 80, 60]), (12, 5, [90, 10, 60, 80])]
    anns = [{"id": k + 1, "image_id": image, "category_id": cat, "bbox": box, "area": float(box[2] * box[3]),
             "iscrowd": int(k == 5)} for k, (image, cat, box) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": cats}


def small_dets(gt: dict) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"image_id": a["image_id"], "category_id": a["category_id"],
             "bbox": [v + float(rng.normal(0, 2)) for v in a["bbox"]], "score": float(rng.uniform(0.3, 1))}
            for a in gt["annotations"]]


def _ann(i: int, **change):
    def edit(gt: dict) -> None:
        gt["annotations"][i].update(change)
    return edit


def _drop(section: str, i: int, key: str):
    def edit(gt: dict) -> None:
        del gt[section][i][key]
    return edit


def _set(section: str, i: int, value):
    def edit(gt: dict) -> None:
        gt[section][i] = value
    return edit


def _empty(section: str):
    def edit(gt: dict) -> None:
        gt[section] = []
    return edit


NAN, INF = float("nan"), float("inf")

# fault -> (edit of the ground truth, words the refusal must hold)
GT_FAULTS = {
    # a traceback before
    "empty annotations": (_empty("annotations"), "empty 'annotations' list"),
    "annotation without bbox": (_drop("annotations", 2, "bbox"), "'annotations' entry 2 has no 'bbox'"),
    "annotation without category_id": (_drop("annotations", 4, "category_id"),
                                       "'annotations' entry 4 has no 'category_id'"),
    "annotation without image_id": (_drop("annotations", 1, "image_id"), "'annotations' entry 1 has no 'image_id'"),
    "annotation without id": (_drop("annotations", 3, "id"), "'annotations' entry 3 has no 'id'"),
    "3-number bbox": (_ann(3, bbox=[1, 2, 3]), "'annotations' entry 3 has bbox [1, 2, 3], not four numbers"),
    "string bbox": (_ann(0, bbox="1 2 3 4"), "'annotations' entry 0 has bbox '1 2 3 4', not four numbers"),
    "non-object annotation": (_set("annotations", 1, [1, 2]), "'annotations' entry 1 is not an object"),
    "iscrowd yes": (_ann(2, iscrowd="yes"), "'annotations' entry 2 has iscrowd 'yes', not 0 or 1"),
    "image without id": (_drop("images", 1, "id"), "'images' entry 1 has no 'id'"),
    "category without name": (_drop("categories", 0, "name"), "'categories' entry 0 has no 'name'"),
    "text category id": (_set("categories", 1, {"id": "5", "name": "dog"}), "'categories' entry 1 has id '5'"),
    "non-object image": (_set("images", 0, "10.jpg"), "'images' entry 0 is not an object"),
    "negative area": (_ann(1, area=-4.0), "'annotations' entry 1 has area -4.0, not a finite number >= 0"),
    # wrong numbers with exit 0 before
    "unknown category id": (_ann(3, category_id=7), "'annotations' entry 3 has category_id 7, which no 'categories'"),
    "unknown image id": (_ann(0, image_id=99), "'annotations' entry 0 has image_id 99, which no 'images'"),
    "nan box": (_ann(4, bbox=[1.0, NAN, 3.0, 4.0]), "'annotations' entry 4 has bbox [1.0, nan, 3.0, 4.0] (NaN"),
    "infinite box": (_ann(2, bbox=[INF, 1.0, 3.0, 4.0]), "'annotations' entry 2 has bbox [inf, 1.0, 3.0, 4.0] (NaN"),
    "negative width": (_ann(1, bbox=[10, 10, -5, 20]), "negative width / height"),
    "negative height": (_ann(5, bbox=[10, 10, 5, -20]), "'annotations' entry 5 has bbox [10, 10, 5, -20]"),
    "zero-area box": (_ann(3, bbox=[10, 10, 0, 20]), "'annotations' entry 3 has bbox [10, 10, 0, 20] of zero width"),
    "duplicate image id": (_set("images", 2, {"id": 10, "width": 200, "height": 150}),
                           "'images' entry 2 has id 10, as entry 0 does (ids must be unique)"),
    "duplicate annotation id": (_ann(4, id=2), "'annotations' entry 4 has id 2, as entry 1 does"),
    "duplicate category id": (_set("categories", 1, {"id": 2, "name": "dog"}), "'categories' entry 1 has id 2"),
}


def write_pair(tmp_path: Path, gt: dict, dets: list[dict]) -> tuple[Path, Path]:
    gt_path, det_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    det_path.write_text(json.dumps(dets))
    return gt_path, det_path


def test_the_clean_ground_truth_is_read(tmp_path):
    gt = small_gt()
    inputs = detections.read_inputs(*write_pair(tmp_path, gt, small_dets(gt)))
    assert len(inputs.gt["annotations"]) == 6 and inputs.gt["annotations"][5]["iscrowd"] == 1


@pytest.mark.parametrize("fault", list(GT_FAULTS))
def test_detections_refuses_a_bad_ground_truth(fault, tmp_path, capsys):
    gt = small_gt()
    dets = small_dets(gt)  # made from the clean ground truth: only the ground truth is at fault
    edit, words = GT_FAULTS[fault]
    edit(gt)
    gt_path, det_path = write_pair(tmp_path, gt, dets)
    message = refused(["detections", "--gt", gt_path, "--results", det_path, "--out", tmp_path / "out",
                       "--bootstrap", "0"], capsys, tmp_path)
    assert message.startswith(f"--gt {gt_path}: ") or message.startswith(f"--gt {gt_path} "), message
    assert words in message, message


def test_a_ground_truth_that_is_not_an_object_is_refused(tmp_path, capsys):
    gt_path, det_path = write_pair(tmp_path, small_gt(), small_dets(small_gt()))
    gt_path.write_text(json.dumps([small_gt()]))
    message = refused(["detections", "--gt", gt_path, "--results", det_path, "--out", tmp_path / "out"], capsys,
                      tmp_path)
    assert "is not a JSON object" in message


def test_tide_reads_a_ground_truth_without_boxes():
    gt = {**small_gt(), "annotations": []}
    frame = pd.DataFrame({"image_id": [10, 11], "category_id": [2, 5], "score": [0.9, 0.4], "x": [1.0, 2.0],
                          "y": [1.0, 2.0], "w": [5.0, 6.0], "h": [5.0, 6.0]})
    match = tide.tide_match(frame, gt)
    assert len(match.status) == 2 and (match.status == tide.FP).all() and len(match.gt_class) == 0


# ------------------------------------------------------------------------------------------------ pcc --difficulty-from
from test_pcc import tiny  # noqa: E402,F401 - the pcc tests' tiny dataset and checkpoint, as a fixture here too


def per_class(tmp_path: Path, ids, aps) -> Path:
    path = tmp_path / "per_class_ap.csv"
    pd.DataFrame({"model": "ref", "mode": "fc", "category_id": ids, "category": [f"c{i}" for i in range(len(ids))],
                  "AP": aps}).to_csv(path, index=False)
    return path


PCC_FAULTS = {  # fault -> (category ids, APs, words)
    "ids of another dataset": ([2, 4, 6, 8, 10, 12], [0.9, 0.8, 0.7, 0.5, 0.4, 0.2],
                               "ranks category ids 2, 4, 6, 8, 10, ... (6 in all) but "),
    "text category id": (["ellipse", 3, 5], [0.9, 0.5, 0.1], "line 2 has category_id 'ellipse', not an integer"),
    "text AP": ([1, 3, 5], [0.9, "good", 0.1], "line 3 has AP 'good', not a number"),
    "no AP at all": ([1, 3, 5], [np.nan, np.nan, np.nan], "has no class with an AP"),
}


@pytest.mark.parametrize("fault", list(PCC_FAULTS))
def test_pcc_refuses_a_difficulty_table_that_ranks_nothing(fault, tiny, tmp_path, capsys):
    ids, aps, words = PCC_FAULTS[fault]
    table = per_class(tmp_path, ids, aps)
    out = tmp_path / "out"
    message = refused(["pcc", "--ckpt", tiny / "fc.pth", "--out", out, "--difficulty-from", table, "--max-images",
                       "1", "--proposals-per-gt", "20", "--no-progress", "--device", "cpu"], capsys, tmp_path,
                      tiny)
    assert message.startswith(f"--difficulty-from: per-class AP table {table}") and words in message, message
    assert not out.exists()


def test_a_ranking_that_shares_a_class_with_the_dataset_passes():
    from dhanalysis.metrics.groups import check_difficulty_classes

    check_difficulty_classes({1: "easy", 2: "hard"}, [1, 3, 5], "ranks.csv", "instances_val.json")
    with pytest.raises(DHError, match="none match"):
        check_difficulty_classes({2: "easy", 4: "hard"}, [1, 3, 5], "ranks.csv", "instances_val.json")


# ------------------------------------------------------------------------------------------------ figures
EVAL_ROWS = [{"model": "m", "mode": "fc", "AP": 0.41, "AP50": 0.62, "AP75": 0.44, "APs": 0.2, "APm": 0.45,
              "APl": 0.55}]


def results_folder(root: Path, eval_rows=EVAL_ROWS, per_class_rows=None, config=True) -> Path:
    """A results folder with one single-fc model: config.json, eval.csv (Table 5 can be drawn from it)."""
    model = root / "results" / "synth-single-fc"
    model.mkdir(parents=True)
    if config:
        (model / "config.json").write_text(json.dumps({"name": "synth-single-fc", "model": {"variant": "single-fc"}}))
    if eval_rows is not None:
        pd.DataFrame(eval_rows).to_csv(model / "eval.csv", index=False)
    if per_class_rows is not None:
        pd.DataFrame(per_class_rows).to_csv(model / "per_class_ap.csv", index=False)
    return root / "results"


def _bad_ap(value):
    return [dict(EVAL_ROWS[0]), dict(EVAL_ROWS[0], mode="conv", AP=value)]


def _figures_case(fault: str, tmp_path: Path) -> tuple[list, str]:
    """(the arguments after 'figures', the words the refusal must hold) of one fault."""
    out = ["--out", tmp_path / "figs"]
    if fault == "unknown format":
        return ["--results", results_folder(tmp_path), "--formats", "png,xyz", *out], \
            "--formats: 'xyz' is not a figure format matplotlib writes; choose from "
    if fault == "no format":
        return ["--results", results_folder(tmp_path), "--formats", ",", *out], "--formats ',' names no format"
    if fault == "empty folder":
        (tmp_path / "results").mkdir()
        return ["--results", tmp_path / "results", *out], "is an empty folder: no model folder"
    if fault == "foreign folder":
        (tmp_path / "photos" / "2024").mkdir(parents=True)
        (tmp_path / "photos" / "2024" / "a.jpg").write_bytes(b"\xff\xd8")
        (tmp_path / "photos" / "notes.txt").write_text("not results")
        return ["--results", tmp_path / "photos", *out], "is not a results folder: it holds no model folder"
    if fault == "file":
        (tmp_path / "results.csv").write_text("a,b\n1,2\n")
        return ["--results", tmp_path / "results.csv", *out], "is a file, not a folder"
    if fault == "missing folder":
        return ["--results", tmp_path / "nowhere", *out], "does not exist"
    if fault == "nothing drawable":
        return ["--results", results_folder(tmp_path, eval_rows=None), *out], \
            "nothing to draw from --results"
    if fault == "only items without inputs":
        return ["--results", results_folder(tmp_path), "--only", "fig2", *out], \
            "Fig. 2 skipped: needs sliding-window results"
    if fault == "unknown models":
        return ["--results", results_folder(tmp_path), "--models", "double-fc", *out], \
            "--models double-fc: no such model folder or variant"
    if fault == "missing sweeps":
        return ["--results", results_folder(tmp_path), "--sweeps", tmp_path / "sw", *out], \
            f"--sweeps {tmp_path / 'sw'} does not exist"
    if fault == "sweeps without results":
        (tmp_path / "sw").mkdir()
        return ["--results", results_folder(tmp_path), "--sweeps", tmp_path / "sw", *out], "holds no results.csv"
    if fault == "text AP":
        return ["--results", results_folder(tmp_path, _bad_ap("high")), *out], \
            "eval.csv: column AP has 'high' on line 3, not a number"
    if fault == "empty AP":
        return ["--results", results_folder(tmp_path, _bad_ap(None)), *out], \
            "eval.csv: column AP has an empty cell on line 3"
    if fault == "text AP50":
        rows = [dict(EVAL_ROWS[0], AP50="fifty")]
        return ["--results", results_folder(tmp_path, rows), *out], "eval.csv: column AP50 has 'fifty' on line 2"
    if fault == "no AP column":
        rows = [{k: v for k, v in EVAL_ROWS[0].items() if k != "AP"}]
        return ["--results", results_folder(tmp_path, rows), *out], "eval.csv has no column AP"
    if fault == "text category id":
        rows = [{"model": "m", "mode": "fc", "category_id": "one", "category": "a", "AP": 0.5}]
        return ["--results", results_folder(tmp_path, per_class_rows=rows), *out], \
            "per_class_ap.csv: column category_id has 'one' on line 2"
    raise AssertionError(fault)


FIGURE_FAULTS = ("unknown format", "no format", "empty folder", "foreign folder", "file", "missing folder",
                 "nothing drawable", "only items without inputs", "unknown models", "missing sweeps",
                 "sweeps without results", "text AP", "empty AP", "text AP50", "no AP column", "text category id")


@pytest.mark.parametrize("fault", FIGURE_FAULTS)
def test_figures_refuses_what_it_cannot_draw(fault, tmp_path, capsys):
    argv, words = _figures_case(fault, tmp_path)
    message = refused(["figures", *argv], capsys, tmp_path)
    assert words in message, message
    assert not (tmp_path / "figs").exists()


def test_figures_of_the_clean_folder_draw_table5(tmp_path, capsys):
    from dhanalysis.cli import main

    root = results_folder(tmp_path)
    assert main(["figures", "--results", str(root), "--out", str(tmp_path / "figs"), "--only", "table5,fig2",
                 "--formats", "PNG"]) == 0
    out = capsys.readouterr().out
    assert "Fig. 2 skipped: " in out and (tmp_path / "figs" / "table5.csv").is_file()


# ------------------------------------------------------------------------------------------------ eval --ckpt
def test_eval_names_a_torchvision_state_dict(tmp_path, capsys):
    state = {"backbone.body.conv1.weight": torch.zeros(2, 3, 1, 1), "backbone.fpn.inner_blocks.0.0.weight":
             torch.zeros(2, 2, 1, 1), "rpn.head.cls_logits.weight": torch.zeros(3, 2, 1, 1),
             "roi_heads.box_head.fc6.weight": torch.zeros(4, 8), "roi_heads.box_predictor.cls_score.weight":
             torch.zeros(3, 4)}
    ckpt = tmp_path / "fasterrcnn_resnet50_fpn.pth"
    torch.save(state, ckpt)
    message = refused(["eval", "--ckpt", ckpt, "--out", tmp_path / "out", "--device", "cpu"], capsys, tmp_path)
    assert "looks like a torchvision state dict" in message, message
    assert f"dhanalysis convert --from torchvision {ckpt} --out" in message, message
    torch.save({"model": copy.deepcopy(state), "epoch": 3}, ckpt)  # the reference training script's form
    assert "torchvision" in refused(["eval", "--ckpt", ckpt, "--out", tmp_path / "out"], capsys, tmp_path)
    torch.save({"weights": torch.zeros(2)}, ckpt)  # anything else keeps the plain message
    assert "was not written by dhanalysis" in refused(["eval", "--ckpt", ckpt, "--out", tmp_path / "out"], capsys,
                                                       tmp_path)


# ------------------------------------------------------------------------------------------------ detections: formats
def _format_world(tmp_path: Path) -> dict[str, Path]:
    """small_gt as COCO json, its YOLO labels and images, VOC xml and devkit detection files, for one bad input each."""
    from PIL import Image

    gt = small_gt()
    paths = dict(zip(("gt", "dets"), write_pair(tmp_path, gt, small_dets(gt))))
    for name in ("images", "labels", "predict", "voc", "comp4"):
        paths[name] = tmp_path / name
        paths[name].mkdir()
    for im in gt["images"]:
        stem = Path(im["file_name"]).stem
        Image.new("RGB", (im["width"], im["height"])).save(paths["images"] / f"{stem}.jpg")
        (paths["labels"] / f"{stem}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
        (paths["predict"] / f"{stem}.txt").write_text("1 0.5 0.5 0.25 0.25 0.75\n")
        (paths["voc"] / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><object><name>cat</name><difficult>0</difficult><bndbox>"
            "<xmin>5</xmin><ymin>5</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")
    (paths["comp4"] / "comp4_det_test_cat.txt").write_text("0 0.9 5 5 40 30\n1 0.4 20 20 50 50\n")
    return paths


def _edit(path_key: str, name: str, text: str):
    def edit(paths: dict[str, Path]) -> None:
        (paths[path_key] / name).write_text(text)
    return edit


# fault -> (flags after --out and --bootstrap 0 with {name} standing for a path of _format_world, an edit of the files
# or None, words the refusal must hold)
FORMAT_FAULTS = {
    "yolo gt without classes": (["--gt", "{labels}", "--results", "{dets}", "--images", "{images}"], None,
                                "is YOLO ground truth, whose class indices need their names: --classes"),
    "yolo gt without images": (["--gt", "{labels}", "--results", "{dets}", "--classes", "cat,dog"], None,
                               "is YOLO ground truth: give the folder of its images with --images DIR"),
    "classes of two coco files": (["--gt", "{gt}", "--results", "{dets}", "--classes", "cat,dog"], None,
                                  "--classes names YOLO class indices"),
    "images of no yolo input": (["--gt", "{gt}", "--results", "{dets}", "--images", "{images}"], None,
                                "--images gives the sizes of the images YOLO coordinates are fractions of"),
    "images not a folder": (["--gt", "{gt}", "--results", "{predict}", "--images", "{gt}"], None,
                            "is not a folder"),
    "duplicate class names": (["--gt", "{gt}", "--results", "{predict}", "--classes", "cat,dog,cat"], None,
                              "--classes: class 2 is named 'cat', as class 0 is; names must be unique"),
    "missing class file": (["--gt", "{gt}", "--results", "{predict}", "--classes", "names.txt"], None,
                           "--classes names.txt does not exist"),
    "offset not an integer": (["--gt", "{gt}", "--results", "{dets}", "--category-offset", "one"], None,
                              "argument --category-offset: must be an integer (e.g. 1 for 0-based ids), got 'one'"),
    "offset and map": (["--gt", "{gt}", "--results", "{dets}", "--category-offset", "1", "--category-map", "index"],
                       None, "give --category-offset or --category-map, not both"),
    "offset of named classes": (["--gt", "{gt}", "--results", "{comp4}", "--category-offset", "1"], None,
                                "--category-offset shifts numeric category ids, but these detections name"),
    "category map missing": (["--gt", "{gt}", "--results", "{dets}", "--category-map", "{gt}.map.json"], None,
                             ".map.json does not exist"),
    "category map not an object": (["--gt", "{gt}", "--results", "{dets}", "--category-map", "{dets}"], None,
                                    "is not a non-empty JSON object"),
    "image map by id": (["--gt", "{gt}", "--results", "{dets}", "--image-map", "{gt}", "--match-images", "by-id"],
                        None, "--image-map maps image ids to file names for --match-images by-name"),
    "yolo results by id": (["--gt", "{gt}", "--results", "{predict}", "--match-images", "by-id"], None,
                           "YOLO detection files name their images by file name"),
    "score field of yolo results": (["--gt", "{gt}", "--results", "{predict}", "--score-field", "fc_score"], None,
                                    "--score-field fc_score: YOLO detection files have one score"),
    "yolo detections without confidence": (["--gt", "{gt}", "--results", "{predict}"],
                                           _edit("predict", "1.txt", "0 0.5 0.5 0.2 0.2\n"),
                                           "1.txt line 1 has 5 fields; a line is 'class cx cy w h conf' "
                                           "(ultralytics writes the confidence with save_txt=True, save_conf=True)"),
    "yolo pixels": (["--gt", "{gt}", "--results", "{predict}"], _edit("predict", "2.txt", "0 40 30 20 10 0.5\n"),
                    "2.txt line 1 has box 40 30 20 10: YOLO's cx cy w h are fractions"),
    "yolo class beyond the list": (["--gt", "{labels}", "--images", "{images}", "--classes", "cat,dog", "--results",
                                    "{dets}"], _edit("labels", "0.txt", "0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n"),
                                   "0.txt line 2 has class 2, not a class index; --classes names 2 (0 to 1)"),
    "yolo label without image": (["--gt", "{labels}", "--images", "{images}", "--classes", "cat,dog", "--results",
                                  "{dets}"], _edit("labels", "7.txt", "0 0.5 0.5 0.1 0.1\n"),
                                 "1 label file without an image in --images"),
    "yolo text class": (["--gt", "{gt}", "--results", "{predict}"],
                        _edit("predict", "0.txt", "cat 0.5 0.5 0.2 0.2 1\n"),
                        "0.txt line 1 is 'cat 0.5 0.5 0.2 0.2 1': not numbers"),
    "voc score above 1": (["--gt", "{gt}", "--results", "{comp4}"],
                          _edit("comp4", "comp4_det_test_cat.txt", "0 0.5 5 5 40 30\n1 3.2 5 5 9 9\n"),
                          "comp4_det_test_cat.txt line 2 has score 3.2, not a number in [0, 1]"),
    "voc class not in the list": (["--gt", "{voc}", "--classes", "dog,bird", "--results", "{dets}"], None,
                                  "0.xml object 0 is a 'cat', which --classes does not name"),
    "voc box upside down": (["--gt", "{voc}", "--results", "{dets}"], _edit(
        "voc", "1.xml", "<annotation><object><name>cat</name><bndbox><xmin>50</xmin><ymin>5</ymin><xmax>40</xmax>"
        "<ymax>30</ymax></bndbox></object></annotation>"), "1.xml object 0 has xmin, ymin, xmax, ymax 50 5 40 30"),
    "mixed folder": (["--gt", "{voc}", "--results", "{dets}"], _edit("voc", "notes.txt", "0 0.5 0.5 0.1 0.1\n"),
                     "holds xml and txt files; say which format it is with --gt-format"),
    "comp4 image not in gt": (["--gt", "{gt}", "--results", "{comp4}"],
                              _edit("comp4", "comp4_det_test_cat.txt", "0 0.5 5 5 40 30\n000017 0.4 5 5 9 9\n"),
                              "1 of 2 image names is not in --gt"),
}


@pytest.mark.parametrize("fault", list(FORMAT_FAULTS))
def test_detections_refuses_bad_inputs_of_other_formats(fault, tmp_path, capsys):
    paths = _format_world(tmp_path)
    flags, edit, words = FORMAT_FAULTS[fault]
    if edit is not None:
        edit(paths)
    argv = ["detections", "--out", tmp_path / "out", "--bootstrap", "0", *(f.format(**paths) for f in flags)]
    message = refused(argv, capsys, tmp_path)
    assert words in message, message


def test_the_clean_inputs_of_other_formats_are_read(tmp_path, capsys):
    """The world the faults above edit passes as it is, so each refusal is its fault's."""
    from dhanalysis.cli import main

    paths = _format_world(tmp_path)
    for n, flags in enumerate([
        ["--gt", paths["labels"], "--images", paths["images"], "--classes", "cat,dog", "--results", paths["predict"]],
        ["--gt", paths["voc"], "--results", paths["comp4"]],
        ["--gt", paths["gt"], "--results", paths["comp4"]],
    ]):
        assert main(["detections", "--out", str(tmp_path / f"out{n}"), "--bootstrap", "0", *map(str, flags)]) == 0
    capsys.readouterr()


# ------------------------------------------------------------------------------------------------ compare --results
def test_compare_refuses_results_of_another_ground_truth(tmp_path, capsys):
    """Two results files compared on one --gt: a file made on another dataset (image ids this ground truth lacks) is
    refused, naming that file, its first foreign entry and how many there are, before the folder is touched."""
    gt = small_gt()
    gt_path, a_path = write_pair(tmp_path, gt, small_dets(gt))
    other = [dict(d, image_id=d["image_id"] + 100) for d in small_dets(gt)]
    b_path = tmp_path / "other.json"
    b_path.write_text(json.dumps(other))
    message = refused(["compare", "--gt", gt_path, "--results", a_path, "--results", b_path, "--out",
                       tmp_path / "out", "--replicates", "10"], capsys, tmp_path)
    assert message.startswith(f"--results {b_path}: ") and "image_id 110" in message and "ground truth" in message
    assert "6 entries like it" in message

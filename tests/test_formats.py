"""`dhanalysis detections` on the inputs people have: YOLO txt and Pascal VOC files give the tables of the same
detections written as COCO json, results numbered otherwise are matched by file name and mapped to the ground
truth's categories, and ids that miss are refused in one line naming the option that fixes them.

The YOLO and VOC files are written here with plain string formatting from the COCO boxes, independently of the
readers. Boxes and image sizes are chosen so that every conversion is exact in binary (sizes powers of two, coordinates
multiples of 1/8), so the tables must be equal, not close.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dhanalysis.metrics import detections, formats
from dhanalysis.metrics.formats import InputOptions
from dhanalysis.errors import DHError

from refusals import refused

CLASSES = ("cat", "dog", "bird")
SIZES = {"000000000007": (256, 128), "000000000012": (128, 256), "000000000031": (512, 256),
         "000000000040": (64, 64), "000000000052": (256, 256)}  # stem -> (width, height); 40 has no objects
STEMS = sorted(SIZES)


def _grid(rng, low: float, high: float) -> float:
    """A number in [low, high] on the 1/8 grid, so every conversion below is exact."""
    return float(np.floor(rng.uniform(low, high) * 8) / 8)


def make_world(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(objects, detections): objects {stem, cls, box [x, y, w, h] pixels, difficult}, detections {stem, cls, box,
    score}; near-misses, class swaps, duplicates and background boxes, distinct scores."""
    rng = np.random.default_rng(seed)
    objects, dets = [], []
    for stem in STEMS:
        width, height = SIZES[stem]
        for _ in range(0 if stem == "000000000040" else int(rng.integers(2, 6))):
            w, h = _grid(rng, 4, width / 2), _grid(rng, 4, height / 2)
            x, y = _grid(rng, 0, width - w), _grid(rng, 0, height - h)
            objects.append({"stem": stem, "cls": int(rng.integers(3)), "box": [x, y, w, h],
                            "difficult": bool(rng.random() < 0.15)})
    for o in objects:
        width, height = SIZES[o["stem"]]
        for _ in range(int(rng.integers(1, 3))):
            x, y, w, h = o["box"]
            x2, y2 = min(x + w + _grid(rng, -3, 3), width), min(y + h + _grid(rng, -3, 3), height)
            x, y = max(x + _grid(rng, -3, 3), 0.0), max(y + _grid(rng, -3, 3), 0.0)
            cls = o["cls"] if rng.random() > 0.2 else int(rng.integers(3))
            dets.append({"stem": o["stem"], "cls": cls, "box": [x, y, x2 - x, y2 - y]})
    for stem in STEMS:
        width, height = SIZES[stem]
        w, h = _grid(rng, 2, width / 3), _grid(rng, 2, height / 3)
        dets.append({"stem": stem, "cls": int(rng.integers(3)),
                     "box": [_grid(rng, 0, width - w), _grid(rng, 0, height - h), w, h]})
    scores = rng.permutation(len(dets)) / len(dets) + 0.5 / len(dets)  # distinct: no ties for COCOeval to break
    for d, s in zip(dets, scores):
        d["score"] = float(s)
    return objects, dets


def coco_gt(objects: list[dict], crowd_difficult: bool, ids: dict[str, int] | None = None) -> dict:
    """The COCO ground truth: images in stem order, annotations in stem order then as listed, category k + 1."""
    ids = ids or {s: int(s) for s in STEMS}
    ordered = sorted(objects, key=lambda o: o["stem"])
    return {
        "images": [{"id": ids[s], "file_name": f"{s}.png", "width": SIZES[s][0], "height": SIZES[s][1]}
                   for s in STEMS],
        "annotations": [{"id": k + 1, "image_id": ids[o["stem"]], "category_id": o["cls"] + 1, "bbox": o["box"],
                         "area": o["box"][2] * o["box"][3], "iscrowd": int(crowd_difficult and o["difficult"])}
                        for k, o in enumerate(ordered)],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)],
    }


def coco_results(dets: list[dict], ids: dict[str, int] | None = None, category=lambda c: c + 1) -> list[dict]:
    ids = ids or {s: int(s) for s in STEMS}
    return [{"image_id": ids[d["stem"]], "category_id": category(d["cls"]), "bbox": d["box"], "score": d["score"]}
            for d in dets]


def by_image(dets: list[dict]) -> list[dict]:
    """The order the YOLO reader gives: files by name, lines in order."""
    return sorted(dets, key=lambda d: d["stem"])


def by_class(dets: list[dict]) -> list[dict]:
    """The order the VOC reader gives: class files by name (comp4_det_test_bird.txt first), lines in order."""
    return sorted(dets, key=lambda d: CLASSES[d["cls"]])


# ------------------------------------------------------------------------------------------------ writing the files
def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for stem, size in SIZES.items():
        Image.new("RGB", size, (90, 120, 150)).save(folder / f"{stem}.png")
    return folder


def _write_yolo(folder: Path, rows: list[dict], with_score: bool) -> Path:
    """One <stem>.txt per image with rows, 'cls cx cy w h' as fractions of the image (then 'conf' with
    ``with_score``); none for an image without rows."""
    folder.mkdir(parents=True)
    for stem in STEMS:
        width, height = SIZES[stem]
        lines = [f"{r['cls']} {(r['box'][0] + r['box'][2] / 2) / width!r} {(r['box'][1] + r['box'][3] / 2) / height!r} "
                 f"{r['box'][2] / width!r} {r['box'][3] / height!r}" + (f" {r['score']!r}" if with_score else "")
                 for r in rows if r["stem"] == stem]
        if lines:
            (folder / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_yolo_labels(folder: Path, objects: list[dict]) -> Path:
    """YOLO ground truth: 'cls cx cy w h' per line."""
    return _write_yolo(folder, objects, with_score=False)


def write_yolo_detections(folder: Path, dets: list[dict]) -> Path:
    """ultralytics' save_txt + save_conf: 'cls cx cy w h conf' per line."""
    return _write_yolo(folder, dets, with_score=True)


def voc_corners(box: list[float]) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] -> the devkit's 1-based inclusive xmin ymin xmax ymax."""
    x, y, w, h = box
    return x + 1, y + 1, x + w, y + h


def write_voc(root: Path, objects: list[dict], test_stems: list[str] | None = None, names=CLASSES) -> Path:
    """VOCdevkit/VOC2007-like: Annotations/<stem>.xml for every image, ImageSets/Main/test.txt."""
    (root / "Annotations").mkdir(parents=True)
    for stem in STEMS:
        width, height = SIZES[stem]
        parts = [f"<annotation><folder>VOC2007</folder><filename>{stem}.png</filename>",
                 f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
        for o in (o for o in objects if o["stem"] == stem):
            xmin, ymin, xmax, ymax = voc_corners(o["box"])
            parts.append(f"<object><name>{names[o['cls']]}</name><pose>Unspecified</pose><truncated>0</truncated>"
                         f"<difficult>{int(o['difficult'])}</difficult><bndbox><xmin>{xmin!r}</xmin>"
                         f"<ymin>{ymin!r}</ymin><xmax>{xmax!r}</xmax><ymax>{ymax!r}</ymax></bndbox></object>")
        (root / "Annotations" / f"{stem}.xml").write_text("\n".join(parts) + "</annotation>\n")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(test_stems or STEMS) + "\n")
    return root


def write_voc_detections(folder: Path, dets: list[dict]) -> Path:
    """The devkit's comp4_det_test_<class>.txt: 'image_id score xmin ymin xmax ymax' per line."""
    folder.mkdir(parents=True)
    for k, name in enumerate(CLASSES):
        lines = [f"{d['stem']} {d['score']!r} " + " ".join(repr(v) for v in voc_corners(d["box"]))
                 for d in dets if d["cls"] == k]
        (folder / f"comp4_det_test_{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    objects, dets = make_world()
    w = {"root": root, "objects": objects, "dets": dets, "images": write_images(root / "images")}
    w["yolo_gt"] = write_yolo_labels(root / "labels", objects)
    w["yolo_dets"] = write_yolo_detections(root / "predict", dets)
    w["voc"] = write_voc(root / "VOC2007", objects)
    w["voc_dets"] = write_voc_detections(root / "comp4", dets)
    w["classes"] = root / "names.txt"
    w["classes"].write_text("\n".join(CLASSES) + "\n")
    w["gt_plain"] = write_json(root / "gt_plain.json", coco_gt(objects, crowd_difficult=False))
    w["gt_voc"] = write_json(root / "gt_voc.json", coco_gt(objects, crowd_difficult=True))
    w["res_by_image"] = write_json(root / "res_by_image.json", coco_results(by_image(dets)))
    w["res_by_class"] = write_json(root / "res_by_class.json", coco_results(by_class(dets)))
    return w


def run(gt, results, **options) -> detections.DetectionResults:
    return detections.compute_detections(gt, results, replicates=20, seed=3, progress=lambda s: None,
                                         input_options=InputOptions(**options) if options else None)


def assert_same_analysis(a: detections.DetectionResults, b: detections.DetectionResults) -> None:
    """Every table equal, and every number of the summary but the run's identity and its time."""
    assert list(a.tables) == list(b.tables)
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name], check_exact=True, obj=name)
    drop = ("run", "seconds")
    assert a.summary.keys() == b.summary.keys()
    for key in a.summary:
        if key not in drop:
            assert _same(a.summary[key], b.summary[key]), key


def _same(x, y) -> bool:
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, float) and np.isnan(x):
        return isinstance(y, float) and np.isnan(y)
    return x == y


@pytest.fixture(scope="module")
def coco_plain(world):
    return run(world["gt_plain"], world["res_by_image"])


# ------------------------------------------------------------------------------------------------ same tables
def test_the_world_has_what_the_comparison_needs(world, coco_plain):
    """Matches, misses, confusions and an image without objects, so equal tables say something."""
    table = coco_plain.tables["detections.csv"]
    assert 0 < table["tp_50"].sum() < len(table) and (table["category_any"] != table["category_id"]).any()
    assert not (world["yolo_gt"] / "000000000040.txt").exists()
    assert any(o["difficult"] for o in world["objects"])
    assert coco_plain.summary["images"] == len(STEMS)


@pytest.mark.parametrize("gt, results, options", [
    ("yolo_gt", "yolo_dets", ("classes", "images")),  # both YOLO
    ("gt_plain", "yolo_dets", ("classes",)),  # COCO ground truth: the sizes are its images'
    ("gt_plain", "yolo_dets", ("classes", "images")),  # the sizes read from --images
    ("gt_plain", "yolo_dets", ()),  # no class names: the indices are category ids, offset by 1
    ("yolo_gt", "res_by_image", ("classes", "images")),  # COCO results by id: the numeric stems are the ids
], ids=["yolo-yolo", "coco-yolo-gt-sizes", "coco-yolo-images", "coco-yolo-offset", "yolo-coco"])
def test_yolo_inputs_give_the_coco_tables(world, coco_plain, gt, results, options):
    given = {k: str(world[k]) for k in options} or {"category_offset": 1}
    assert_same_analysis(run(world[gt], world[results], **given), coco_plain)


def test_yolo_classes_as_a_comma_list_or_data_yaml(world, coco_plain, tmp_path):
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text("path: .\nnames:\n  0: cat\n  1: dog\n  2: bird\n")
    for classes in (",".join(CLASSES), str(yaml_file), list(CLASSES)):
        assert_same_analysis(run(world["yolo_gt"], world["yolo_dets"], classes=classes, images=world["images"]),
                             coco_plain)


@pytest.fixture(scope="module")
def coco_voc(world):
    return run(world["gt_voc"], world["res_by_class"])


@pytest.mark.parametrize("gt", ["folder", "image set"])
def test_voc_inputs_give_the_coco_tables(world, coco_voc, gt):
    """Difficult objects become crowds (iscrowd=1), boxes the devkit's 1-based inclusive pixels."""
    path = world["voc"] / "Annotations" if gt == "folder" else world["voc"] / "ImageSets" / "Main" / "test.txt"
    done = run(path, world["voc_dets"], classes=",".join(CLASSES))
    assert_same_analysis(done, coco_voc)


def test_voc_ground_truth_as_built(world):
    """The VOC reader's dict: ids from the numeric stems, difficult -> iscrowd, x = xmin - 1, w = xmax - xmin + 1."""
    resolved = formats.resolve_options(InputOptions(classes=",".join(CLASSES)), world["voc"] / "Annotations",
                                       world["voc_dets"])
    gt = detections.read_ground_truth(world["voc"] / "Annotations", resolved)
    assert [im["id"] for im in gt["images"]] == [7, 12, 31, 40, 52]
    assert gt["images"][0] == {"id": 7, "file_name": "000000000007.png", "width": 256, "height": 128}
    ordered = sorted(world["objects"], key=lambda o: o["stem"])
    assert [a["bbox"] for a in gt["annotations"]] == [o["box"] for o in ordered]
    assert [a["iscrowd"] for a in gt["annotations"]] == [int(o["difficult"]) for o in ordered]
    assert gt["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]


def test_voc_iou_is_the_devkits(world, coco_voc):
    """Each VOC detection's IoU with its best same-class, non-difficult object equals the devkit's formula (areas
    and intersections in inclusive pixels: + 1), computed here from the corners written to the files."""
    table = run(world["voc"] / "Annotations", world["voc_dets"]).tables["detections.csv"]
    objects = [o for o in world["objects"] if not o["difficult"]]
    expected = []
    for d in by_class(world["dets"]):
        bx = voc_corners(d["box"])
        best = 0.0
        for o in objects:
            if o["stem"] != d["stem"] or o["cls"] != d["cls"]:
                continue
            gx = voc_corners(o["box"])
            iw = min(bx[2], gx[2]) - max(bx[0], gx[0]) + 1
            ih = min(bx[3], gx[3]) - max(bx[1], gx[1]) + 1
            if iw > 0 and ih > 0:
                union = ((bx[2] - bx[0] + 1) * (bx[3] - bx[1] + 1) + (gx[2] - gx[0] + 1) * (gx[3] - gx[1] + 1)
                         - iw * ih)
                best = max(best, iw * ih / union)
        expected.append(best)
    np.testing.assert_allclose(table["iou"].to_numpy(), expected, rtol=1e-12, atol=1e-12)


def test_voc_classes_default_to_the_names_found(world, tmp_path):
    """Without --classes: VOC's own 20 in their order when every name is VOC's (as voc2coco numbers them), else the
    names found, sorted."""
    from dhanalysis.data.voc import VOC_CLASSES

    resolved = formats.resolve_options(None, world["voc"] / "Annotations", world["voc_dets"])
    gt = detections.read_ground_truth(world["voc"] / "Annotations", resolved)
    assert [c["name"] for c in gt["categories"]] == list(VOC_CLASSES)
    assert {a["category_id"] for a in gt["annotations"]} <= {VOC_CLASSES.index(n) + 1 for n in CLASSES}
    root = write_voc(tmp_path / "VOC", world["objects"], names=("wolf", "fox", "hawk"))
    gt = detections.read_ground_truth(root / "Annotations", formats.resolve_options(None, root / "Annotations",
                                                                                    world["voc_dets"]))
    assert [c["name"] for c in gt["categories"]] == ["fox", "hawk", "wolf"]


def test_image_sizes_follow_the_exif_orientation(tmp_path):
    """A JPEG stored 64 x 32 whose EXIF orientation turns it a quarter is shown (and read by OpenCV) 32 x 64."""
    exif = Image.Exif()
    exif[formats.EXIF_ORIENTATION] = 6
    Image.new("RGB", (64, 32)).save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGB", (64, 32)).save(tmp_path / "plain.jpg")
    assert formats.image_sizes(formats.image_files(tmp_path)) == {"plain": (64, 32), "turned": (32, 64)}


def test_an_image_set_keeps_only_its_images(world, tmp_path):
    root = write_voc(tmp_path / "VOC2007", world["objects"], test_stems=STEMS[:2])
    resolved = formats.resolve_options(None, root / "ImageSets" / "Main" / "test.txt", world["voc_dets"])
    gt = detections.read_ground_truth(root / "ImageSets" / "Main" / "test.txt", resolved)
    assert [im["id"] for im in gt["images"]] == [7, 12]


# ------------------------------------------------------------------------------------------------ matching
def test_by_name_matches_file_stems(world, tmp_path):
    """Results keyed by file stem (strings, file names, or int(stem) as ultralytics writes them) against a ground
    truth numbered 1, 2, ...: by name they give the tables of the same results keyed by the ground truth's ids."""
    ids = {s: k + 1 for k, s in enumerate(STEMS)}
    gt = write_json(tmp_path / "gt.json", coco_gt(world["objects"], False, ids))
    reference = run(gt, write_json(tmp_path / "by_id.json", coco_results(by_image(world["dets"]), ids)))
    for name, key in (("stem", lambda s: s), ("file", lambda s: f"val2017/{s}.png"), ("int", lambda s: int(s))):
        res = write_json(tmp_path / f"{name}.json", coco_results(by_image(world["dets"]), {s: key(s) for s in STEMS}))
        assert_same_analysis(run(gt, res, match_images="by-name"), reference)


def test_image_map_turns_another_numbering_into_names(world, coco_plain, tmp_path):
    theirs = {s: 500 + k for k, s in enumerate(reversed(STEMS))}
    res = write_json(tmp_path / "theirs.json", coco_results(by_image(world["dets"]), theirs))
    their_gt = write_json(tmp_path / "their_gt.json", {"images": [{"id": i, "file_name": f"x/{s}.jpg"}
                                                                  for s, i in theirs.items()]})
    plain_map = write_json(tmp_path / "map.json", {str(i): f"{s}.png" for s, i in theirs.items()})
    for image_map in (their_gt, plain_map):
        assert_same_analysis(run(world["gt_plain"], res, image_map=image_map), coco_plain)


def test_category_offset_and_maps(world, coco_plain, tmp_path):
    zero_based = write_json(tmp_path / "zero.json", coco_results(by_image(world["dets"]), category=lambda c: c))
    assert_same_analysis(run(world["gt_plain"], zero_based, category_offset=1), coco_plain)
    assert_same_analysis(run(world["gt_plain"], zero_based, category_map="index"), coco_plain)
    by_names = write_json(tmp_path / "names.json", {"0": "cat", "1": "dog", "2": 3})
    assert_same_analysis(run(world["gt_plain"], zero_based, category_map=by_names), coco_plain)
    renamed = write_json(tmp_path / "renamed.json", {"feline": "cat", "canine": "dog"})
    names = ",".join({"cat": "feline", "dog": "canine"}.get(n, n) for n in CLASSES)
    assert_same_analysis(run(world["gt_plain"], world["yolo_dets"], classes=names, category_map=renamed), coco_plain)


def test_index_map_against_sparse_ids(world, tmp_path):
    """COCO's 80 classes numbered 0-79 against ids 1-90 (ultralytics #19250): index, not an offset."""
    gt = coco_gt(world["objects"], False)
    sparse = {1: 4, 2: 9, 3: 17}
    for a in gt["annotations"]:
        a["category_id"] = sparse[a["category_id"]]
    for c in gt["categories"]:
        c["id"] = sparse[c["id"]]
    gt_path = write_json(tmp_path / "gt.json", gt)
    right = write_json(tmp_path / "right.json", coco_results(world["dets"], category=lambda c: sparse[c + 1]))
    zero = write_json(tmp_path / "zero.json", coco_results(world["dets"], category=lambda c: c))
    with pytest.raises(DHError, match=r"3 of 3 category ids are not .*try --category-map index\)"):
        run(gt_path, zero)
    assert_same_analysis(run(gt_path, zero, category_map="index"), run(gt_path, right))


def test_folder_identity_follows_the_files_and_options(world, tmp_path):
    """A folder of YOLO results resumes with the same files and options, and refuses other options."""
    from dhanalysis.folders import FolderTaken

    out = tmp_path / "out"
    options = InputOptions(classes=str(world["classes"]), images=world["images"])
    kwargs = dict(replicates=0, progress=lambda s: None)
    first = detections.compute_detections(world["yolo_gt"], world["yolo_dets"], out, input_options=options, **kwargs)
    again = detections.compute_detections(world["yolo_gt"], world["yolo_dets"], out, input_options=options, **kwargs)
    assert first.paths and not again.paths
    assert first.summary["run"]["inputs"]["gt_format"] == "yolo"
    with pytest.raises(FolderTaken):
        detections.compute_detections(world["gt_plain"], world["yolo_dets"], out, input_options=options, **kwargs)


# ------------------------------------------------------------------------------------------------ refusals
def _cli(out, *flags) -> list:
    return ["detections", "--out", out, "--bootstrap", "0", *flags]


@pytest.mark.parametrize("case, flags, words", [
    ("zero-based category ids", ["--results", "{zero}"],
     "--results {zero}: 1 of 3 category ids is not in --gt {gt}'s categories (ids look 0-based: try "
     "--category-offset 1); entry "),
    ("ids shifted the other way", ["--results", "{plus_one}"],
     "1 of 3 category ids is not in --gt {gt}'s categories (ids look shifted by one: try --category-offset -1)"),
    ("stem image ids by id", ["--results", "{stems}"],
     "5 of 5 image ids are not in --gt {gt}'s images (they match its file names: try --match-images by-name)"),
    ("other numbering", ["--results", "{other}"],
     "image ids are not in --gt {gt}'s images (another numbering? --image-map MAP.json"),
    ("offset that does not fix it", ["--results", "{zero}", "--category-offset", "5"],
     "(after --category-offset 5)"),
    ("yolo without names of the gt", ["--results", "{yolo}", "--classes", "a,b,c"],
     "the ground truth's are 'cat', 'dog', 'bird': map them with --category-map MAP.json); {yolo}/"),
    ("yolo image not in gt", ["--results", "{yolo}", "--classes", "cat,dog,bird", "--gt", "{gt_small}"],
     "1 of 5 image names is not in --gt {gt_small}'s images by file name (its images are named like "
     "'000000000007.png'); {yolo}/000000000052.txt line 1 has image '000000000052'"),
])
def test_ids_that_miss_are_refused_with_the_fix(world, tmp_path, capsys, case, flags, words):
    gt_small = coco_gt(world["objects"], False)
    gt_small["images"] = [im for im in gt_small["images"] if im["id"] != 52]
    gt_small["annotations"] = [a for a in gt_small["annotations"] if a["image_id"] != 52]
    paths = {
        "gt": world["gt_plain"], "yolo": world["yolo_dets"],
        "gt_small": write_json(tmp_path / "gt_small.json", gt_small),
        "zero": write_json(tmp_path / "zero.json", coco_results(world["dets"], category=lambda c: c)),
        "plus_one": write_json(tmp_path / "plus_one.json", coco_results(world["dets"], category=lambda c: c + 2)),
        "stems": write_json(tmp_path / "stems.json", coco_results(world["dets"], {s: s for s in STEMS})),
        "other": write_json(tmp_path / "other.json", coco_results(world["dets"], {s: 900 + int(s) for s in STEMS})),
    }
    argv = [f.format(**paths) for f in flags]
    if "--gt" not in argv:
        argv = ["--gt", str(world["gt_plain"]), *argv]
    message = refused(_cli(tmp_path / "out", *argv), capsys, tmp_path, world["root"])
    assert words.format(**paths) in message, message

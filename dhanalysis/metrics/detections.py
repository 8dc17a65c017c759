"""Any detector's detections, from a COCO results file: per-detection table, score–IoU alignment, oracle rescoring,
TIDE's and COCO analyze()'s error breakdowns, calibration, LRP (``dhanalysis detections``).

The paper asks whether a detector's classification score tracks how well its box is localised (§3.2, Fig. 3 right:
detections after NMS). This module asks it of any detector: its input is a COCO ground-truth json and a COCO results
json (``image_id``, ``category_id``, ``bbox`` xywh, ``score`` in [0, 1], optional extra per-detection score fields),
no model.

- **Matching is COCOeval's.** One evaluation (IoU 0.5:0.95 plus 0.1 for analyze's Loc curve; areas all / small /
  medium / large; 100 detections per image and class) gives the real AP and each detection's matched ground truth
  and true-positive flag at IoU 0.5 and 0.75: COCOeval's greedy matching by score, its crowd and area rules. It runs
  in `dhanalysis.metrics.coco_match`, COCOeval's evaluate + accumulate vectorised over every image and class, whose
  arrays equal pycocotools' element for element (tests/test_coco_match.py): the analysis needs five evaluations,
  and pycocotools' per-(image, class) loop made them the bulk of its time at COCO size.
- **IoU of a detection** (alignment, oracle): with the best-overlapping non-crowd ground truth of its own class, 0
  when none; ``iou_any`` / ``gt_any``: the same over every class. **Size** (its group): the COCO area group of that
  best same-class ground truth when it overlaps one, else of its own box (the rule of `dhanalysis pcc`).
- **Alignment** (`dhanalysis.metrics.alignment`): every detection of the file, grouped overall, by size, by class.
- **Oracle rescoring**: the evaluation again with each detection's score replaced by its IoU, and by score × IoU;
  the matching is redone, since COCOeval matches in score order.
- **TIDE** (`dhanalysis.metrics.tide`) and **analyze()** (`dhanalysis.metrics.coco_analyze`) by their own
  definitions.
- **Average recall, precision / recall / F1 at a score threshold, confusion matrix**
  (`dhanalysis.metrics.threshold_metrics`): COCO's AR from the same evaluation, the threshold metrics from its
  matching, the confusion matrix by ultralytics' counting.
- **Calibration** (`dhanalysis.metrics.calibration`: D-ECE and MCE at IoU 0.5 / 0.75 from the same matching,
  LaECE_0 from one more evaluation at IoU 0) and **LRP / oLRP** at IoU 0.5 (`dhanalysis.metrics.lrp`), each by its
  paper's definition.

Bad input (a missing file, a results file with a missing key, an unknown image or category id, a NaN or negative-size
box, a score outside [0, 1], an empty list) is a `DHError` naming the first bad entry and how many there are, before
anything is written. The ground truth is checked as strictly, since a bad one moves AP as surely: every image,
category and annotation an object with its fields of the right type and range, ids unique, annotations of known
images and categories, boxes finite with positive width and height (a zero-area box is refused, not ignored:
COCOeval counts it as a miss that no detection can match). The results folder is claimed like every analysis's (`dhanalysis.folders.claim`): the same
inputs and settings again find the finished outputs and return them; other inputs are refused unless ``overwrite``.

**Stage.** The within-object measures need several boxes per object, which a file after NMS rarely has, so the
summary records which stage the file holds (`detections_stage`): what eval's sidecar beside its detections files
says, else what the user states, else "not stated"; a statement contradicting the sidecar is refused.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dhanalysis.metrics import (alignment, calibration, coco_analyze, coco_match, formats, lrp, measures,
                                  threshold_metrics, tide)
from dhanalysis.errors import DHError
from dhanalysis.folders import atomic_write_json, claim, read_identity, write_table
from dhanalysis.results import RESULTS
from dhanalysis.vocab import (DETECTION_STAGES, DETECTIONS_ALIGNMENT_BINS_CSV, DETECTIONS_ALIGNMENT_CSV,
                              DETECTIONS_ALIGNMENT_HIST_CSV, DETECTIONS_ANALYZE_CSV, DETECTIONS_ANALYZE_PR_CSV,
                              DETECTIONS_CALIBRATION_CSV, DETECTIONS_CSV, DETECTIONS_INFO_JSON, DETECTIONS_LRP_CSV,
                              DETECTIONS_MEASURES_CSV, DETECTIONS_ORACLE_CSV, DETECTIONS_PARQUET, DETECTIONS_TABLES,
                              DETECTIONS_TIDE_CSV, SIZE_GROUPS, STAGE_NOT_STATED, detections_file, size_index)

REQUIRED_KEYS = ("image_id", "category_id", "bbox", "score")
COCO_IOUS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))  # COCOeval's thresholds
EXTRA_IOU = 0.1  # analyze()'s Loc, Sim and Oth curves
MATCH_IOUS = (50, 75)  # the thresholds the per-detection table reports (in hundredths)
ORACLES = ("score", "iou", "score_x_iou")

_TABLES = DETECTIONS_TABLES
OUTPUTS = RESULTS["detections"]  # the tables of _TABLES, each as CSV (+ Parquet), and the summary

PROTOCOL = {
    "detections": "every detection of the results file; COCOeval keeps the 100 best per image and class",
    "iou": "IoU with the best-overlapping non-crowd ground truth of the detected class (0 when none)",
    "size": "COCO area group of that ground truth when the detection overlaps one, else of the detection's box",
    "matching": "COCOeval's (greedy by score, crowd and area rules), area 'all', 100 detections per image and class",
    "bootstrap": "percentile intervals (95%) over images resampled with replacement",
    "tide": "tidecv 1.0.1 definitions at IoU 0.5, background 0.1, 100 detections per image over all classes",
    "lrp": "TPAMI 2022 definition, tau 0.5: (sum over TPs of (1 - IoU) / (1 - tau) + FP + FN) / (TP + FP + FN) at "
           "COCOeval's matching; oLRP per class = min over score thresholds; moLRP = mean over classes with ground "
           "truth",
    "stage": "after_nms or before_nms (the per-class NMS and per-image top-k) as eval_stage.json beside an eval "
             "detections file says, else as stated, else 'not stated'",
}
STATED = "stated"  # the summary's stage_source when the user, not a sidecar, gave the stage


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass
class DetectionInputs:
    """A ground truth and a results file, checked. ``results`` has one row per entry of the file, in its order:
    image_id, category_id, score, x, y, w, h and every extra score field."""

    gt: dict
    results: pd.DataFrame
    score_fields: tuple[str, ...]
    gt_path: Path
    results_path: Path
    gt_boxes: coco_match.Boxes | None = None  # the ground truth as arrays (`coco_match.ground_truth_boxes`)
    source: dict | None = None  # how the files were read, when not as two COCO json matched by id (`formats`)

    def __post_init__(self):
        if self.gt_boxes is None:
            self.gt_boxes = coco_match.ground_truth_boxes(self.gt)

    def detection_boxes(self, scores: np.ndarray) -> coco_match.Boxes:
        """The results as `coco_match` boxes with these scores (row i is detection id i + 1, as loadRes numbers)."""
        res = self.results
        return coco_match.detection_boxes(res["image_id"].to_numpy(), res["category_id"].to_numpy(),
                                          res[["x", "y", "w", "h"]].to_numpy(np.float64), scores)


_read_json = formats.read_json
GT_FILE = formats.GT_FILE  # how errors name the ground truth (the CLI turns it into --gt)
GT_LISTS = ("images", "annotations", "categories")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_box(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(map(_is_number, value))


def _shown(value, limit: int = 60) -> str:
    """``repr`` cut short, so a huge bad value still leaves a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# the fields of each ground-truth list: (key, required, accepts, what it must be); a field that is present is checked
# even when optional, since COCOeval reads it (area, iscrowd) or the tables print it (name)
GT_FIELDS: dict[str, tuple[tuple[str, bool, object, str], ...]] = {
    "categories": (
        ("id", True, _is_int, "not an integer"),
        ("name", True, lambda v: isinstance(v, str) and v.strip() != "", "not a non-empty string"),
        ("supercategory", False, lambda v: isinstance(v, str), "not a string"),
    ),
    "images": (
        ("id", True, _is_int, "not an integer"),
        ("width", False, lambda v: _is_number(v) and math.isfinite(v) and v > 0, "not a positive number"),
        ("height", False, lambda v: _is_number(v) and math.isfinite(v) and v > 0, "not a positive number"),
    ),
    "annotations": (
        ("id", True, _is_int, "not an integer"),
        ("image_id", True, _is_int, "not an integer"),
        ("category_id", True, _is_int, "not an integer"),
        ("bbox", True, _is_box, "not four numbers [x, y, w, h]"),
        ("area", False, lambda v: _is_number(v) and math.isfinite(v) and v >= 0, "not a finite number >= 0"),
        ("iscrowd", False, lambda v: isinstance(v, (int, bool)) and v in (0, 1), "not 0 or 1"),
    ),
}


def _check_gt_list(entries: list, name: str, path: Path) -> None:
    """Every entry of one ground-truth list an object with its required fields, each field of the right type and
    range, and no id given twice: what the evaluation would otherwise crash on or silently count wrong."""
    where = {"what": GT_FILE, "entry": f"'{name}' entry"}
    _first_bad(np.array([not isinstance(e, dict) for e in entries]), path, lambda i: "is not an object", **where)
    for key, required, accepts, wanted in GT_FIELDS[name]:
        if required:
            _first_bad(np.array([key not in e for e in entries]), path, lambda i, key=key: f"has no '{key}'", **where)
        _first_bad(np.array([key in e and not accepts(e[key]) for e in entries]), path,
                   lambda i, key=key, wanted=wanted: f"has {key} {_shown(entries[i][key])}, {wanted}", **where)
    first: dict[int, int] = {}
    again = np.array([first.setdefault(e["id"], i) != i for i, e in enumerate(entries)])
    _first_bad(again, path, lambda i: f"has id {entries[i]['id']}, as entry {first[entries[i]['id']]} does "
               "(ids must be unique)", **where)


def read_ground_truth(path: str | Path, resolved: formats.Resolved | None = None) -> dict:
    """The ground-truth dataset dict, every entry checked as strictly as a results file (a bad ground truth moves
    AP as surely as a bad detection), ``area`` and ``iscrowd`` filled where absent (as pycocotools reads them).
    ``resolved``: how to read it (`formats.resolve_options`; VOC and YOLO ground truth are built, then checked
    alike); None: a COCO json."""
    path = Path(path)
    data = formats.ground_truth_data(path, resolved) if resolved is not None else _read_json(path, GT_FILE)
    if not isinstance(data, dict):
        raise DHError(f"{GT_FILE} {path} is not a JSON object; give a COCO instances json with "
                      f"{', '.join(repr(k) for k in GT_LISTS)} lists")
    missing = [k for k in GT_LISTS if not isinstance(data.get(k), list)]
    if missing:
        raise DHError(f"{GT_FILE} {path} has no '{missing[0]}' list; give a COCO instances json")
    empty = [k for k in GT_LISTS if not data[k]]
    if empty:
        raise DHError(f"{GT_FILE} {path} has an empty '{empty[0]}' list; a ground truth needs at least one image, "
                      "one category and one annotated box to score detections against")
    for name in ("categories", "images", "annotations"):
        _check_gt_list(data[name], name, path)
    anns = data["annotations"]
    where = {"what": GT_FILE, "entry": "'annotations' entry"}
    for key, section in (("image_id", "images"), ("category_id", "categories")):
        known = {e["id"] for e in data[section]}
        _first_bad(np.array([a[key] not in known for a in anns]), path,
                   lambda i, key=key, section=section: f"has {key} {anns[i][key]}, which no '{section}' entry has",
                   **where)
    xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        broken = ~np.isfinite(xywh).all(axis=1) | (xywh[:, 2] < 0) | (xywh[:, 3] < 0)
        empty_box = ~broken & ((xywh[:, 2] == 0) | (xywh[:, 3] == 0))
    _first_bad(broken, path, lambda i: f"has bbox {_shown(anns[i]['bbox'])} (NaN, infinite or negative width / "
               "height)", **where)
    # COCOeval does not ignore a zero-area box: nothing can overlap it, so it stays a miss and lowers AP
    _first_bad(empty_box, path, lambda i: f"has bbox {_shown(anns[i]['bbox'])} of zero width or height, which no "
               "detection can match (COCOeval counts it as a miss)", **where)
    filled = [{**a, "area": a.get("area", float(w * h)), "iscrowd": int(a.get("iscrowd", 0))}
              for a, (_, _, w, h) in zip(anns, xywh)]
    return {**data, "annotations": filled}


def _first_bad(bad: np.ndarray, path: Path, problem, what: str = "results file", entry: str = "entry") -> None:
    """Raise naming the first entry where ``bad`` holds and how many entries it holds for; ``what`` names the file's
    role, ``entry`` the list the index counts in."""
    hits = np.flatnonzero(bad)
    if len(hits):
        n = len(hits)
        more = f"; {n} entries like it" if n > 1 else ""
        raise DHError(f"{what} {path}: {entry} {hits[0]} {problem(hits[0])}{more}; fix or remove them")


def read_results(path: str | Path, gt: dict, score_fields: Sequence[str] = (), resolved: formats.Resolved | None = None,
                 gt_path: str | Path | None = None) -> pd.DataFrame:
    """The results file as a table, every entry checked (see the module's docstring); its image and category ids
    mapped to the ground truth's as ``resolved`` says (`formats`), YOLO and VOC detection files read by their
    readers."""
    path = Path(path)
    resolved = resolved or formats.coco_json()
    gt_path = Path(gt_path) if gt_path is not None else None
    if resolved.results_format != formats.COCO:
        return formats.detection_files(path, gt, resolved, gt_path)
    records = _read_json(path, "results file")
    if not isinstance(records, list):
        raise DHError(f"results file {path} is not a list of detections (COCO results format)")
    if not records:
        raise DHError(f"results file {path} holds no detections; nothing to analyse")
    _first_bad(np.array([not isinstance(r, dict) for r in records]), path, lambda i: "is not an object")
    for key in (*REQUIRED_KEYS, *score_fields):
        _first_bad(np.array([key not in r for r in records]), path, lambda i, key=key: f"has no '{key}'")
    frame = pd.DataFrame({k: [r[k] for r in records] for k in ("image_id", "category_id", "score", *score_fields)})
    # ids the ground truth lacks are refused here, counted, with the option that maps them when one would
    frame["image_id"] = formats.resolve_images(frame["image_id"].to_numpy(dtype=object), gt, path, resolved, gt_path)
    frame["category_id"] = formats.resolve_categories(frame["category_id"].to_numpy(dtype=object), gt, path,
                                                      resolved, gt_path)
    boxes = [r["bbox"] for r in records]
    shape_bad = np.array([not (isinstance(b, (list, tuple)) and len(b) == 4
                               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b))
                          for b in boxes])
    _first_bad(shape_bad, path, lambda i: f"has bbox {boxes[i]!r}, not four numbers [x, y, w, h]")
    xywh = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    _first_bad(~np.isfinite(xywh).all(axis=1) | (xywh[:, 2] < 0) | (xywh[:, 3] < 0), path,
               lambda i: f"has bbox {boxes[i]!r} (NaN, infinite or negative width / height)")
    for field in ("score", *score_fields):
        values = pd.to_numeric(frame[field], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values) | (values < 0) | (values > 1) if field == "score" else ~np.isfinite(values)
        raw = frame[field].to_numpy(dtype=object)
        _first_bad(bad, path, lambda i, f=field, raw=raw: f"has {f} {raw[i]!r}, "
                   + ("not a number in [0, 1]" if f == "score" else "not a finite number"))
        frame[field] = values
    frame[["x", "y", "w", "h"]] = xywh
    frame["image_id"] = frame["image_id"].astype(np.int64)
    frame["category_id"] = frame["category_id"].astype(np.int64)
    return frame


def read_inputs(gt_path: str | Path, results_path: str | Path, score_fields: Sequence[str] = (),
                options: formats.InputOptions | None = None) -> DetectionInputs:
    """The ground truth and the results, read as ``options`` says (`formats.InputOptions`; default: two COCO json
    files matched by id) and checked."""
    reserved = {"iou", "score_x_iou"} | set(REQUIRED_KEYS)
    clash = [f for f in score_fields if f in reserved or f in ("x", "y", "w", "h")]
    if clash:
        raise DHError(f"score field '{clash[0]}' is a reserved name; name another per-detection field")
    gt_path, results_path = Path(gt_path), Path(results_path)
    resolved = formats.resolve_options(options, gt_path, results_path, score_fields)
    gt = read_ground_truth(gt_path, resolved)
    results = read_results(results_path, gt, score_fields, resolved, gt_path)
    source = None if resolved.is_default else {**resolved.key(), "content": formats.content_digest(gt, results)}
    return DetectionInputs(gt, results, tuple(score_fields), gt_path, results_path, source=source)


def detections_stage(results_path: str | Path, stated: str | None = None) -> tuple[str, str | None]:
    """(stage, its source) of a results file: ``after_nms`` or ``before_nms`` from the sidecar eval writes beside its
    ``detections_<mode>.json`` (source: the sidecar's name), else ``stated`` (source `STATED`), else
    (`STAGE_NOT_STATED`, None). A statement that contradicts the sidecar is a `DHError`: one of them is wrong, and
    the measures that need before-NMS detections would be read on the wrong kind."""
    if stated is not None and stated not in DETECTION_STAGES:
        raise DHError(f"stated stage {stated!r} is not one of {', '.join(DETECTION_STAGES)}")
    results_path = Path(results_path)
    sidecar = results_path.parent / DETECTIONS_INFO_JSON
    if not (fnmatch.fnmatchcase(results_path.name, detections_file("*")) and sidecar.is_file()):
        return (stated, STATED) if stated is not None else (STAGE_NOT_STATED, None)
    info = _read_json(sidecar, "detections sidecar")
    recorded = info.get("stage") if isinstance(info, dict) else None
    if recorded not in DETECTION_STAGES:
        raise DHError(f"detections sidecar {sidecar} has stage {_shown(recorded)}, not one of "
                      f"{', '.join(DETECTION_STAGES)}; evaluate again to rewrite it, or remove it")
    if stated is not None and stated != recorded:
        raise DHError(f"stated stage {stated} contradicts {sidecar}, which says the detections are {recorded}; "
                      f"leave the stage out or state {recorded}")
    return recorded, DETECTIONS_INFO_JSON


# ---------------------------------------------------------------------------------------------------- COCOeval
def coco_eval(inputs: DetectionInputs, scores: np.ndarray | coco_match.Boxes,
              iou_thresholds: Sequence[float] = COCO_IOUS, area_all_only: bool = False) -> coco_match.Evaluation:
    """COCOeval's evaluate + accumulate of the results with the given scores (or their boxes already built with them),
    on every image of the ground truth (areas all / small / medium / large and 1 / 10 / 100 detections, or area "all"
    and 100 only)."""
    dets = scores if isinstance(scores, coco_match.Boxes) else inputs.detection_boxes(np.asarray(scores, np.float64))
    areas, labels, max_dets = ((coco_match.AREA_RANGES[:1], coco_match.AREA_LABELS[:1], (100,)) if area_all_only
                               else (coco_match.AREA_RANGES, coco_match.AREA_LABELS, coco_match.MAX_DETS))
    return coco_match.evaluate(inputs.gt_boxes, dets,
                               [im["id"] for im in inputs.gt["images"]], [c["id"] for c in inputs.gt["categories"]],
                               iou_thresholds, areas, labels, max_dets)


def ap_metrics(ev) -> dict[str, float]:
    """AP (IoU 0.5:0.95), AP50, AP75 and, when evaluated, APs / APm / APl, as COCOeval's summarize computes them,
    from the precision of its standard thresholds only (an extra threshold such as 0.1 is left out)."""
    p = ev.params
    thr = np.asarray(p.iouThrs)
    standard = np.array([np.isclose(thr, t).any() for t in COCO_IOUS]).all()
    keep = np.array([np.isclose(COCO_IOUS, t).any() for t in thr]) if standard else np.ones(len(thr), bool)
    prec = ev.eval["precision"]  # (T, R, K, A, M)
    area = coco_match.area_index(p)

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(x.mean()) if x.size else float("nan")

    out = {"AP": mean(prec[keep][..., area, -1])}
    for name, t in (("AP50", 0.5), ("AP75", 0.75)):
        hit = np.flatnonzero(np.isclose(thr, t))
        out[name] = mean(prec[hit[0], :, :, area, -1]) if len(hit) else float("nan")
    for name, label in (("APs", "small"), ("APm", "medium"), ("APl", "large")):
        if label in p.areaRngLbl:
            out[name] = mean(prec[keep][..., p.areaRngLbl.index(label), -1])
    return out


# ---------------------------------------------------------------------------------------------------- the table
def _best_overlaps(inputs: DetectionInputs) -> dict[str, np.ndarray]:
    """Per detection: IoU with and id of the best non-crowd ground truth of its class and of any class."""
    from pycocotools import mask as mask_utils

    res = inputs.results
    n = len(res)
    out = {"iou": np.zeros(n), "gt": np.full(n, -1, np.int64), "iou_any": np.zeros(n),
           "gt_any": np.full(n, -1, np.int64)}
    anns = [a for a in inputs.gt["annotations"] if not a["iscrowd"]]
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    xywh = res[["x", "y", "w", "h"]].to_numpy(np.float64)
    cls = res["category_id"].to_numpy()
    for image, rows in pd.Series(np.arange(n)).groupby(res["image_id"].to_numpy()).indices.items():
        gts = by_image.get(image)
        if not gts:
            continue
        g_box = np.asarray([a["bbox"] for a in gts], dtype=np.float64)
        g_id = np.asarray([a["id"] for a in gts])
        g_cls = np.asarray([a["category_id"] for a in gts])
        iou = np.asarray(mask_utils.iou(xywh[rows], g_box, [0] * len(gts)), dtype=np.float64).reshape(len(rows), -1)
        j = iou.argmax(axis=1)
        out["iou_any"][rows] = iou[np.arange(len(rows)), j]
        out["gt_any"][rows] = np.where(out["iou_any"][rows] > 0, g_id[j], -1)
        same = np.where(cls[rows][:, None] == g_cls[None, :], iou, -1.0)
        j = same.argmax(axis=1)
        best = same[np.arange(len(rows)), j]
        out["iou"][rows] = np.maximum(best, 0.0)
        out["gt"][rows] = np.where(best > 0, g_id[j], -1)
    return out


def _size_group(area: np.ndarray) -> np.ndarray:
    """COCO's size group (`vocab.size_index`) of each annotation area ``(N,)``, as names."""
    return np.asarray(SIZE_GROUPS, dtype=object)[size_index(area)]


def _coco_matches(ev: coco_match.Evaluation, num_rows: int) -> dict[str, np.ndarray]:
    """Per results row, area "all": evaluated (within its 100 per image and class) and, at IoU 0.5 and 0.75, the
    matched ground-truth id (-1 none), ignored (None where not evaluated) and true-positive flags."""
    p = ev.params
    thr = np.asarray(p.iouThrs)
    area = coco_match.area_index(p)
    out = {"evaluated": ev.evaluated.copy()}
    for t in MATCH_IOUS:
        ti = int(np.flatnonzero(np.isclose(thr, t / 100))[0])
        match = ev.dt_match[area, ti]
        out[f"gt_{t}"] = np.where(ev.evaluated & (match > 0), match, -1).astype(np.int64)
        ignored = np.full(num_rows, None, dtype=object)
        ignored[ev.evaluated] = ev.dt_ignore[area, ti][ev.evaluated]
        out[f"ignored_{t}"] = ignored
        out[f"tp_{t}"] = (out[f"gt_{t}"] >= 0) & (ignored == False)  # noqa: E712 (None stays False)
    return out


def detection_table(inputs: DetectionInputs, ev, tide_errors: np.ndarray) -> pd.DataFrame:
    """One row per entry of the results file (``det`` = its position): image, class, scores, box, size group, the
    best same-class and any-class overlaps, COCOeval's matches at IoU 0.5 / 0.75, TIDE's outcome."""
    res = inputs.results
    names = {c["id"]: c["name"] for c in inputs.gt["categories"]}
    gt_area = {a["id"]: a["area"] for a in inputs.gt["annotations"]}
    best = _best_overlaps(inputs)
    matches = _coco_matches(ev, len(res))
    own_area = (res["w"] * res["h"]).to_numpy()
    area = np.where(best["gt"] >= 0, [gt_area.get(g, 0.0) for g in best["gt"]], own_area)
    any_cat = {a["id"]: a["category_id"] for a in inputs.gt["annotations"]}
    table = pd.DataFrame({
        "det": np.arange(len(res)), "image_id": res["image_id"], "category_id": res["category_id"],
        "category": res["category_id"].map(names), "score": res["score"],
        **{f: res[f] for f in inputs.score_fields},
        "x": res["x"], "y": res["y"], "w": res["w"], "h": res["h"], "area": own_area, "size": _size_group(area),
        "iou": best["iou"], "gt": best["gt"], "iou_any": best["iou_any"], "gt_any": best["gt_any"],
        "category_any": [any_cat.get(g, -1) for g in best["gt_any"]],
        "evaluated": matches["evaluated"],
        **{f"{k}_{t}": matches[f"{k}_{t}"] for t in MATCH_IOUS for k in ("gt", "tp", "ignored")},
        "tide": tide_errors,
    })
    return table


# ---------------------------------------------------------------------------------------------------- the analysis
def oracle_table(inputs: DetectionInputs, table: pd.DataFrame, real: dict[str, float]) -> pd.DataFrame:
    """AP, AP50, AP75 with the real scores and with each detection's score replaced by its IoU and by score × IoU."""
    rows = [{"scoring": "score", **{k: real[k] for k in ("AP", "AP50", "AP75")}}]
    for name, scores in (("iou", table["iou"].to_numpy()), ("score_x_iou", (table["score"] * table["iou"]).to_numpy())):
        ev = coco_eval(inputs, scores, area_all_only=True)
        m = ap_metrics(ev)
        rows.append({"scoring": name, **{k: m[k] for k in ("AP", "AP50", "AP75")}})
    out = pd.DataFrame(rows)
    out["gain"] = out["AP"] - real["AP"]
    return out


def file_identity(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"name": path.name, "sha256": digest.hexdigest()}


@dataclass
class DetectionResults:
    """What `analyse_detections` returns: the tables (also written when ``out`` was given) and the summary."""

    tables: dict[str, pd.DataFrame]
    summary: dict
    paths: list[Path]


def analyse_detections(inputs: DetectionInputs, replicates: int = alignment.ALIGNMENT_REPLICATES,
                       seed: int = 0, progress=print,
                       score_threshold: float = threshold_metrics.DEFAULT_SCORE_THRESHOLD,
                       confusion_iou: float = threshold_metrics.DEFAULT_CONFUSION_IOU,
                       positive_iou: float = measures.DEFAULT_POSITIVE_IOU,
                       calibration_bins: str = calibration.EQUAL_WIDTH,
                       ) -> tuple[dict[str, pd.DataFrame], dict]:
    """Every table of the analysis (keyed by file name) and the summary's numbers, nothing written.
    ``score_threshold``: the detections precision / recall / F1 and the confusion matrix keep (score >= it);
    ``confusion_iou``: the IoU a confusion-matrix pair must exceed; ``positive_iou``: the positives of the alignment
    measures (`measures`), one table of them per score field; ``calibration_bins``: D-ECE's and MCE's binning
    (`calibration.BINNINGS`)."""
    start = time.perf_counter()
    image_ids = [im["id"] for im in inputs.gt["images"]]
    progress(f"COCO evaluation of {len(inputs.results)} detections on {len(image_ids)} images")
    dets = inputs.detection_boxes(inputs.results["score"].to_numpy(np.float64))
    ev = coco_eval(inputs, dets, (*COCO_IOUS, EXTRA_IOU))
    real = ap_metrics(ev)
    progress("TIDE's error breakdown")
    match = tide.tide_match(inputs.results, inputs.gt)
    tide_table, tide_ap = tide.tide_breakdown(match)
    table = detection_table(inputs, ev, tide.error_names(match, len(inputs.results)))
    fields = ("score", *inputs.score_fields)
    progress(f"score-IoU alignment ({replicates} bootstrap replicates)")
    tables = {
        DETECTIONS_CSV: table,
        DETECTIONS_ALIGNMENT_CSV: alignment.alignment_table(table, fields, replicates=replicates, seed=seed),
        DETECTIONS_ALIGNMENT_BINS_CSV: alignment.bin_table(table, fields),
        DETECTIONS_ALIGNMENT_HIST_CSV: alignment.histogram_table(table, fields),
    }
    progress("oracle rescoring")
    tables[DETECTIONS_ORACLE_CSV] = oracle_table(inputs, table, real)
    tables[DETECTIONS_TIDE_CSV] = tide_table
    progress("COCO analyze() breakdown")
    tables[DETECTIONS_ANALYZE_CSV], tables[DETECTIONS_ANALYZE_PR_CSV] = coco_analyze.analyze_breakdown(
        inputs.gt, inputs.gt_boxes, dets, ev)
    progress("calibration (D-ECE, MCE, LaECE_0) and LRP")
    names = {c["id"]: c["name"] for c in inputs.gt["categories"]}
    laece_ev = coco_eval(inputs, dets, (calibration.LAECE_IOU,), area_all_only=True)  # LaECE_0 matches at IoU >= 0
    tables[DETECTIONS_CALIBRATION_CSV], ece = calibration.calibration_table(ev, laece_ev, inputs.gt_boxes, dets, names,
                                                                            calibration_bins)
    tables[DETECTIONS_LRP_CSV], olrp = lrp.lrp_table(ev, inputs.gt_boxes, dets, names)
    progress(f"alignment measures ({replicates} bootstrap replicates)")
    tables[DETECTIONS_MEASURES_CSV] = measures.results_measures(table, fields, positive_iou=positive_iou,
                                                                replicates=replicates, seed=seed)
    progress(f"average recall, precision / recall / F1 and confusion matrix at score >= {score_threshold:g}")
    metrics, recall = threshold_metrics.metric_tables(ev, inputs.gt_boxes, dets, names, score_threshold, confusion_iou)
    tables.update(metrics)
    summary = {
        "images": len(image_ids), "ground_truths": sum(not a["iscrowd"] for a in inputs.gt["annotations"]),
        "detections": len(table), "evaluated": int(table["evaluated"].sum()), "score_fields": list(fields),
        "coco": {**real, **recall}, "tide_ap50": tide_ap, "tide_dropped": int(len(match.dropped)), **ece,
        "calibration_bins": calibration_bins, **olrp,
        "score_threshold": float(score_threshold), "confusion_iou": float(confusion_iou),
        "supercategories": coco_analyze.has_supercategories(inputs.gt),
        "protocol": {**PROTOCOL, **threshold_metrics.PROTOCOL, **calibration.PROTOCOL},
        "seconds": round(time.perf_counter() - start, 2),
    }
    return tables, summary


def compute_detections(gt: str | Path, results: str | Path, out: str | Path | None = None,
                       score_fields: Sequence[str] = (), replicates: int = alignment.ALIGNMENT_REPLICATES,
                       seed: int = 0, overwrite: bool = False, progress=print,
                       score_threshold: float = threshold_metrics.DEFAULT_SCORE_THRESHOLD,
                       confusion_iou: float = threshold_metrics.DEFAULT_CONFUSION_IOU,
                       positive_iou: float = measures.DEFAULT_POSITIVE_IOU,
                       stage: str | None = None,
                       calibration_bins: str = calibration.EQUAL_WIDTH,
                       input_options: formats.InputOptions | None = None) -> DetectionResults:
    """Check the inputs, analyse them and (with ``out``) write every table and ``detections_summary.json`` last.

    A folder already holding this analysis of the same files and settings is not recomputed: its tables are read;
    one written before the alignment measures is refused unless ``overwrite``. ``stage``: ``after_nms`` or
    ``before_nms`` as the user knows it, checked against eval's sidecar (`detections_stage`); the summary records the
    stage as ``stage`` and where it came from as ``stage_source``. ``calibration_bins``: ``equal-width`` (D-ECE's
    definition) or ``equal-count`` score bins for D-ECE and MCE; it is part of the folder's identity, so a folder
    written before it was (equal-count ECE, no det_lrp.csv) is refused unless ``overwrite``. ``input_options``: how to
    read the inputs (`formats.InputOptions`: YOLO / VOC files, image matching by name, category maps); what they
    change is part of the folder's identity, with a digest of what was read.
    """
    inputs = read_inputs(gt, results, score_fields, input_options)  # every bad input fails here, before writing
    stage, stage_source = detections_stage(inputs.results_path, stage)
    if replicates < 0:
        raise DHError(f"replicates must be >= 0, got {replicates}")
    threshold_metrics.check_thresholds(score_threshold, confusion_iou)
    calibration.check_binning(calibration_bins)
    key = {"analysis": OUTPUTS.analysis, "gt": formats.path_identity(inputs.gt_path),
           "results": formats.path_identity(inputs.results_path), "score_fields": list(score_fields),
           "replicates": int(replicates), "seed": int(seed), "score_threshold": float(score_threshold),
           "confusion_iou": float(confusion_iou), "positive_iou": float(positive_iou),
           "measures_format": measures.MEASURES_FORMAT, "calibration_bins": calibration_bins}
    if stage != STAGE_NOT_STATED:  # only when known, so a folder written before stages were recorded still resumes
        key["stage"] = stage
    if inputs.source is not None:  # likewise only for inputs read otherwise than as two COCO json matched by id
        key["inputs"] = inputs.source
    measures.positive_bin(positive_iou)
    folder = Path(out) if out is not None else None
    if folder is not None:
        summary_path = folder / OUTPUTS.summary
        if not overwrite:
            measures.check_measure_format(read_identity(summary_path), folder, OUTPUTS.what)
        done = claim(folder, key, read_identity(summary_path), [folder / f for f in OUTPUTS.files],
                     overwrite=overwrite, what=OUTPUTS.what)
        if done and summary_path.is_file():
            tables = {t: pd.read_csv(folder / t) for t in _TABLES if (folder / t).is_file()}
            return DetectionResults(tables, json.loads(summary_path.read_text()), [])
    tables, summary = analyse_detections(inputs, replicates, seed, progress, score_threshold=score_threshold,
                                         confusion_iou=confusion_iou, positive_iou=positive_iou,
                                         calibration_bins=calibration_bins)
    summary = {"run": key, "stage": stage, "stage_source": stage_source, **summary}
    paths: list[Path] = []
    if folder is not None:
        for name, frame in tables.items():
            paths += write_table(frame, folder / name, parquet=name in DETECTIONS_PARQUET)
        atomic_write_json(folder / OUTPUTS.summary, _finite(summary))
        paths.append(folder / OUTPUTS.summary)
    return DetectionResults(tables, summary, paths)


def _finite(obj):
    """JSON has no NaN: write null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj

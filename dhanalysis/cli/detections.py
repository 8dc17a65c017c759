"""Analyse any detector's detections from a COCO results file (no model is run).

  dhanalysis detections --gt annotations/instances_val2017.json --results dets.json --out results/my-detector
  dhanalysis detections --gt GT.json --results eval/detections_fc.json --out results/x --score-field fc_score

--results is a COCO results json: a list of {image_id, category_id, bbox [x, y, w, h], score in [0, 1]}, plus any
per-detection score fields named by --score-field (each analysed for score-IoU alignment like the score). --gt and
--results may also be YOLO txt or Pascal VOC files, and results numbered otherwise than the ground truth may be matched
by file name and mapped to its categories (docs/detections.md, "Inputs"):

  dhanalysis detections --gt labels/val --images images/val --classes data.yaml --results runs/predict/labels --out x
  dhanalysis detections --gt VOC2007/ImageSets/Main/test.txt --results comp4/ --out y
  dhanalysis detections --gt GT.json --results yolo.json --match-images by-name --category-map index --out z

Writes to
--out: detections.csv (+ .parquet with pyarrow; one row per detection: COCOeval's match and TP flag at IoU 0.5 and
0.75, best same-class and any-class IoU, size group, TIDE's error type), det_alignment.csv (Pearson, Spearman,
Kendall of score and IoU overall / per size / per class with bootstrap intervals over images), det_alignment_bins.csv,
det_alignment_hist.csv, det_oracle_ap.csv (AP with score := IoU and score x IoU), det_tide.csv (TIDE's dAP),
det_measures.csv (every alignment measure of pcc.csv per score field: pooled and positives-only PCC, rank
correlation among each object's detections with IoU >= --positive-iou, the NMS gap, the pooled PCC's decomposition;
bootstrap intervals over images), det_analyze.csv / det_analyze_pr.csv (COCO analyze(): C75, C50, Loc, Sim, Oth,
BG, FN), det_calibration.csv (reliability bins of D-ECE at IoU 0.5 and 0.75 over every class, binned by
--calibration-bins, and of LaECE_0 per class, each row naming its measure and binning), det_lrp.csv (oLRP at IoU 0.5,
its localisation / FP / FN components and the LRP-optimal score threshold per class; moLRP), det_recall.csv (COCO's
AR), det_thresholds.csv (precision / recall / F1 at --score-threshold and at the F1-optimal threshold, IoU 0.5 and
0.75, COCOeval's matching), det_f1_curve.csv, det_confusion.csv (ultralytics' counting at --confusion-iou and
--score-threshold) and detections_summary.json (protocol, AP, AR, D-ECE / MCE / LaECE, moLRP, the detections' stage)
last. 'dhanalysis figures --results OUT' draws them. The same inputs
and settings again return the finished folder; other inputs in it are refused unless --overwrite.

The within-object measures (object_spearman, object_kendall, nms_gap, nms_near_best) need several boxes per object:
detections before NMS ('dhanalysis eval --before-nms'). The summary records the file's stage: what the
eval_stage.json that eval writes beside its detections_<mode>.json says, else --stage, else "not stated"; a
--stage that contradicts the sidecar is refused.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dhanalysis.metrics.alignment import ALIGNMENT_REPLICATES
    from dhanalysis.metrics.calibration import BINNINGS, EQUAL_WIDTH
    from dhanalysis.metrics.threshold_metrics import DEFAULT_CONFUSION_IOU, DEFAULT_SCORE_THRESHOLD
    from dhanalysis.flags import fraction
    from dhanalysis.vocab import DETECTION_STAGES

    parser.add_argument("--gt", required=True, metavar="GT.json", help="COCO ground-truth (instances) json")
    parser.add_argument("--results", required=True, metavar="dets.json", help="COCO results json of any detector")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--score-field", action="append", default=[], metavar="NAME",
                        help="another per-detection score to analyse beside 'score' (repeatable)")
    parser.add_argument("--bootstrap", type=int, default=ALIGNMENT_REPLICATES, metavar="B",
                        help=f"bootstrap replicates over images for the correlation intervals (default "
                             f"{ALIGNMENT_REPLICATES}; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--score-threshold", type=fraction, default=DEFAULT_SCORE_THRESHOLD, metavar="S",
                        help=f"detections with score >= S make the precision / recall / F1 of det_thresholds.csv and "
                             f"the confusion matrix (default {DEFAULT_SCORE_THRESHOLD})")
    parser.add_argument("--confusion-iou", type=fraction, default=DEFAULT_CONFUSION_IOU, metavar="T",
                        help=f"a detection and a ground truth pair in the confusion matrix when their IoU > T "
                             f"(default {DEFAULT_CONFUSION_IOU})")
    from dhanalysis.metrics.measures import add_positive_iou_argument

    add_positive_iou_argument(parser)
    parser.add_argument("--calibration-bins", choices=BINNINGS, default=EQUAL_WIDTH,
                        help="score bins of D-ECE and MCE: equal-width (10 over [0, 1], Küppers et al.'s and netcal's "
                             "definition, the default) or equal-count (10 bins between the scores' quantiles); "
                             "LaECE always uses its 25 equal-width bins")
    parser.add_argument("--stage", choices=DETECTION_STAGES, default=None,
                        help="whether --results holds detections before or after the per-class NMS (for another "
                             "detector's file; eval's detections_<mode>.json state it in eval_stage.json beside "
                             "them, which this must not contradict)")
    parser.add_argument("--overwrite", action="store_true", help="replace results of other inputs in --out")
    add_input_arguments(parser)


def category_offset(text: str) -> int:
    """An integer added to every category id of --results (of either sign; 0 changes nothing)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (e.g. 1 for 0-based ids), got '{text}'") from None


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """How --gt and --results are read: their formats, the class list, the images' sizes, image and category
    matching (`dhanalysis.metrics.formats`)."""
    from dhanalysis.metrics.formats import BY_INDEX, FORMATS, MATCHINGS

    group = parser.add_argument_group("inputs other than two COCO json files matched by id")
    group.add_argument("--gt-format", choices=FORMATS, default="auto",
                       help="coco (a .json), voc (a folder of .xml, or an ImageSets/Main/<set>.txt), yolo (a folder "
                            "of <image stem>.txt: 'class cx cy w h'); auto (default) tells them apart")
    group.add_argument("--results-format", choices=FORMATS, default="auto",
                       help="coco (a .json), voc (the devkit's <comp>_det_<set>_<class>.txt files, or <class>.txt "
                            "with voc named), yolo (a folder of <image stem>.txt: 'class cx cy w h conf'); auto "
                            "(default) tells them apart")
    group.add_argument("--classes", metavar="NAMES",
                       help="the class list: a file of one name a line (class 0 first), a YOLO data.yaml, or a,b,c; "
                            "needed by YOLO ground truth, names YOLO detections' classes, orders a VOC ground truth's")
    group.add_argument("--images", metavar="DIR",
                       help="the images YOLO coordinates are fractions of (their sizes from the file headers); "
                            "needed by YOLO ground truth, else YOLO detections take the ground truth's sizes")
    group.add_argument("--match-images", choices=MATCHINGS, default=None,
                       help="by-id (default for a COCO results json): its image_id is the ground truth's; by-name: "
                            "its image_id is a file name or stem (or the number of a numeric stem) of a ground-truth "
                            "image; YOLO and VOC detections are always matched by name")
    group.add_argument("--image-map", metavar="MAP.json",
                       help="their image ids' file names, {\"their id\": \"file name\"} or a COCO json with their "
                            "'images'; implies --match-images by-name")
    group.add_argument("--category-offset", type=category_offset, default=0, metavar="N",
                       help="add N to every category id of --results (1: 0-based ids against 1-based ones)")
    group.add_argument("--category-map", metavar="MAP.json",
                       help=f"{{\"their id or class name\": our id or category name}}, or '{BY_INDEX}': their id i is "
                            "the ground truth's i-th category in id order (YOLO's numbering of COCO's 80)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from dhanalysis.cli.report import page_line
    from dhanalysis.metrics.detections import compute_detections
    from dhanalysis.metrics.formats import InputOptions
    from dhanalysis.flags import check_at_least, print_written
    from dhanalysis.errors import DHError
    from dhanalysis.folders import check_writable_folder
    from dhanalysis.vocab import DETECTIONS_ORACLE_CSV, DETECTIONS_THRESHOLDS_CSV, DETECTIONS_TIDE_CSV

    check_writable_folder(args.out)
    check_at_least(args, bootstrap=0)
    try:
        done = compute_detections(args.gt, args.results, args.out, score_fields=args.score_field,
                                  replicates=args.bootstrap, seed=args.seed, overwrite=args.overwrite,
                                  positive_iou=args.positive_iou, score_threshold=args.score_threshold,
                                  confusion_iou=args.confusion_iou, stage=args.stage,
                                  calibration_bins=args.calibration_bins,
                                  input_options=InputOptions(
                                      gt_format=args.gt_format, results_format=args.results_format,
                                      classes=args.classes, images=args.images, match_images=args.match_images,
                                      image_map=args.image_map, category_offset=args.category_offset,
                                      category_map=args.category_map))
    except DHError as exc:  # the library names files by role; name the flags
        text = (str(exc).replace("ground-truth file ", "--gt ").replace("results file ", "--results ")
                .replace("stated stage ", "--stage "))
        raise type(exc)(text) if type(exc) is DHError else exc from None
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
        print(done.tables[DETECTIONS_ORACLE_CSV].to_string(index=False))
        print(done.tables[DETECTIONS_TIDE_CSV].to_string(index=False))
        thresholds = done.tables[DETECTIONS_THRESHOLDS_CSV]
        print(thresholds[thresholds["category"] == "all"].to_string(index=False))
    print(calibration_line(done.summary))
    print(stage_line(done.summary))
    if done.paths:
        print_written(done.paths)
    else:
        print(f"{args.out} already holds this analysis of these files; nothing recomputed")
    print(f"report: {page_line(args.out, args.overwrite)}")
    return 0


def calibration_line(summary: dict) -> str:
    """The report's line of the one-number measures beside AP: calibration errors and moLRP (lower is better)."""

    def shown(key: str) -> str:
        value = summary.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    return (f"calibration ({summary.get('calibration_bins', 'equal-width')} bins): D-ECE@0.5 {shown('ece_50')}, "
            f"MCE@0.5 {shown('mce_50')}, D-ECE@0.75 {shown('ece_75')}, LaECE_0 {shown('laece')}; "
            f"moLRP@0.5 {shown('olrp')} (loc {shown('olrp_loc')}, FP {shown('olrp_fp')}, FN {shown('olrp_fn')})")


def stage_line(summary: dict) -> str:
    """The report's line on which detections were analysed: the within-object measures mean little after NMS."""
    from dhanalysis.metrics.detections import STATED
    from dhanalysis.vocab import BEFORE_NMS, STAGE_NOT_STATED

    stage = summary.get("stage", STAGE_NOT_STATED)
    source = summary.get("stage_source")
    if stage == STAGE_NOT_STATED:
        return (f"detections stage: {stage} (no eval_stage.json beside --results; --stage before_nms or "
                "after_nms records it)")
    where = "--stage" if source == STATED else f"{source} beside --results"
    note = "" if stage == BEFORE_NMS else "; within-object measures cover few objects after NMS (read their n)"
    return f"detections stage: {stage} (from {where}){note}"


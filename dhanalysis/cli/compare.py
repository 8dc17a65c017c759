"""Compare two detectors' COCO results files on one ground truth, metric by metric, with paired intervals.

  dhanalysis compare --gt annotations/instances_val2017.json --results a.json --results b.json --out results/a-vs-b
  dhanalysis compare --gt GT.json --results x/detections_fc.json --results y/detections_fc.json --names fc-head ext

For every headline metric — COCO's AP, AP50, AP75, APs, APm, APl, AR100; TIDE's dAP of each error; the score-IoU
alignment measures (pooled and positives-only PCC, rank correlation within objects, the NMS gap); D-ECE at IoU 0.5;
moLRP — writes the value of A (the first --results) and of B, the difference B - A, its 95% interval from a paired
bootstrap over images (each replicate draws the images once and measures both detectors on that draw), the
two-sided bootstrap p-value of "the difference is 0" and whether Holm's correction over the metrics rejects it
(compare.csv, each detector's own interval beside it), then compare_summary.json last. 'dhanalysis figures
--results OUT' draws the differences with their intervals (det-compare). Holm can reject only when
2 / (replicates + 1) <= 0.05 / metrics, so keep about 1000 replicates. The same inputs and settings again return the
finished folder; another comparison in it is refused unless --overwrite.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dhanalysis.stats.bootstrap import DEFAULT_REPLICATES
    from dhanalysis.flags import at_least, non_negative_int
    from dhanalysis.metrics.measures import add_positive_iou_argument

    parser.add_argument("--gt", required=True, metavar="GT.json", help="COCO ground-truth (instances) json")
    parser.add_argument("--results", required=True, action="append", default=[], metavar="dets.json",
                        help="COCO results json of a detector; give it twice: A first, then B")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--names", nargs=2, metavar=("A", "B"),
                        help="what to call the two detectors (default: the results files' names)")
    parser.add_argument("--replicates", type=at_least(2), default=DEFAULT_REPLICATES, metavar="B",
                        help=f"paired bootstrap replicates over images (default {DEFAULT_REPLICATES})")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the bootstrap (default 0)")
    add_positive_iou_argument(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace another comparison in --out")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from dhanalysis.metrics.compare import check_settings, compute_compare
    from dhanalysis.metrics.measures import positive_bin
    from dhanalysis.flags import flag_error, print_written
    from dhanalysis.errors import DHError
    from dhanalysis.cli.report import page_line
    from dhanalysis.folders import check_writable_folder

    check_writable_folder(args.out)
    flag_error("--positive-iou", positive_bin, args.positive_iou)
    if len(args.results) != 2:
        raise DHError(f"--results must be given twice (A, then B), got {len(args.results)}")
    try:
        names = check_settings(args.results, args.names, args.replicates)
        done = compute_compare(args.gt, args.results, args.out, names, args.replicates, args.seed,
                               overwrite=args.overwrite, positive_iou=args.positive_iou)
    except DHError as exc:  # the library names files and settings by role; name the flags
        text = (str(exc).replace("ground-truth file ", "--gt ").replace("results file ", "--results ")
                .replace("names must", "--names must"))
        raise type(exc)(text) if type(exc) is DHError else exc from None
    summary = done.summary
    print(f"A = {summary['names']['a']}, B = {summary['names']['b']}: differences B - A on {summary['images']} "
          f"images, 95% paired bootstrap intervals ({summary['replicates']} replicates), Holm over "
          f"{summary['holm']['family']} metrics")
    shown = done.table[["metric", "a", "b", "difference", "ci_low", "ci_high", "p_value", "holm_reject"]]
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
        print(shown.to_string(index=False))
    if not summary["holm_can_reject"]:
        print(f"note: with {summary['replicates']} replicates the smallest p-value is {summary['smallest_p']:.4f}, "
              f"above Holm's first bar 0.05 / {summary['holm']['family']}; Holm rejects nothing (use --replicates "
              f"{40 * summary['holm']['family'] - 1} or more)")
    if done.paths:
        print_written(done.paths)
    else:
        print(f"{args.out} already holds this comparison of these files; nothing recomputed")
    print(f"report: {page_line(args.out, args.overwrite)}")
    return 0

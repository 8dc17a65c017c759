"""Pearson correlation (PCC) between IoU and classification score, per head (paper §3.2, Fig. 3, Fig. A.2).

  dhanalysis pcc --ckpt fc.pth --ckpt conv.pth --split val2017 --out results/pcc --difficulty-from per_class_ap.csv

Three sets of boxes, for each head that has a classifier:
  predefined  the sliding-window proposals of §3.1: x = IoU with the window's own box, s = score of that box's
              class. Groups: all, size (small/medium/large by COCO annotation area), and difficulty (easy/medium/
              hard: terciles of the classes ranked by the AP in --difficulty-from, a per_class_ap.csv of
              'dhanalysis eval'). Reuses sliding_window_stats.csv in the output folder when it was made with the
              same model, data, --proposals-per-gt and --grid; otherwise computes it first (and writes it).
  rpn         the model's own RPN proposals: x = IoU with the best-matching ground truth (any class), s = score of
              that box's class. --rpn-background keep (default): proposals that touch no box are kept with x = 0
              (their class is the one of the box with the nearest centre); drop: they are left out.
  detections  final detections after NMS: x = IoU with the best-matching ground truth of the detected class (0
              when none), s = the detection score; each head through a mode in which it classifies (its own
              mode, else fc-cls+conv-reg / conv-cls+fc-reg; see the mode column).
  rpn and detection boxes are grouped by size like COCOeval: the matched box's group, or their own area's when
  they overlap nothing. Crowd boxes are ignored.

Without --ckpt, every finished run under ./checkpoints is analysed in turn (see 'dhanalysis sliding-window -h').

Every set gets every alignment measure (docs/analysis.md, "Which alignment measure answers which question"):
pooled_pcc (the paper's), positive_pcc (boxes with IoU >= --positive-iou), object_spearman / object_kendall (rank
correlation among each object's positives, mean over objects), nms_gap / nms_near_best (what the ranking costs at
NMS), and the decomposition curve_pcc, explained_share, within_bin; with 95% bootstrap intervals over images
(--bootstrap).

Writes to OUT (several models: OUT/<model name>/): pcc.csv (model, head, proposal_set, grouping, group, mode,
measure, n, pcc (the value), ci_low, ci_high; groupings all, size, class, difficulty), pcc_stats.csv (the rpn/detection
streaming sums n, sum_x, sum_x2, sum_s, sum_s2, sum_xs per model, head, proposal_set, mode, class, size, IoU bin;
tables of several shards merge by addition), pcc_objects.csv (one row per object, head and set: its moments and
rank measures), pcc_summary.json, and the sliding-window outputs when it computed them. Results written before the
measures are refused: rerun with --overwrite. Definitions in docs/analysis.md.

Absolute PCCs depend on the window grid (--grid) and on --rpn-background: compare heads analysed the same way, not
the paper's printed numbers.
"""

from __future__ import annotations

import argparse

from dhanalysis.flags import check_at_least, flag_error, print_written
from dhanalysis.probes.flags import (add_model_arguments, add_run_arguments, add_window_arguments, models, run_options,
                                     window_values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dhanalysis.metrics.measures import MEASURE_REPLICATES
    from dhanalysis.probes.sliding_window import DEFAULT_BATCH_SIZE

    add_model_arguments(parser)
    add_run_arguments(parser, DEFAULT_BATCH_SIZE)
    add_window_arguments(parser)
    parser.add_argument("--difficulty-from", metavar="PATH",
                        help="per_class_ap.csv (dhanalysis eval) of the reference model that ranks class difficulty")
    parser.add_argument("--difficulty-model", help="the model in --difficulty-from, when it holds several")
    parser.add_argument("--difficulty-mode", help="the inference mode in --difficulty-from, when it holds several")
    parser.add_argument("--bootstrap", type=int, default=MEASURE_REPLICATES, metavar="B",
                        help=f"bootstrap replicates over images for the measures' 95%% intervals (default "
                             f"{MEASURE_REPLICATES}; 0: none)")
    parser.add_argument("--rpn-background", default="keep", metavar="{keep,drop}",
                        help="RPN proposals that overlap no ground-truth box: keep them in the rpn set with IoU 0 "
                             "(default), or drop them from it")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from dhanalysis.metrics.groups import load_difficulty
    from dhanalysis.probes.pcc import check_rpn_background, compute_pcc
    from dhanalysis.errors import DHError
    from dhanalysis.folders import check_writable_folder
    from dhanalysis.model.checkpoint import check_model_names

    check_writable_folder(args.out or "results")  # before any model runs: results go under it
    check_model_names(args.ckpt, args.name)
    check_at_least(args, batch_size=1, bootstrap=0)
    values, options = window_values(args), run_options(args)  # bad flags fail before any model is loaded
    flag_error("--rpn-background", check_rpn_background, args.rpn_background)
    difficulty = None
    if args.difficulty_from:
        try:
            difficulty = load_difficulty(args.difficulty_from, args.difficulty_model, args.difficulty_mode)
        except DHError as exc:  # the library names the values; name the flags they came from
            words = str(exc).replace("(model=...)", "with --difficulty-model").replace("(mode=...)",
                                                                                       "with --difficulty-mode")
            raise DHError(f"--difficulty-from: {words}") from None
    check = _difficulty_check(args, difficulty) if difficulty is not None else None
    for model_run in models(args, check=check):
        written = compute_pcc(model_run, batch_size=args.batch_size, rpn_background=args.rpn_background,
                              difficulty=difficulty, difficulty_from=args.difficulty_from, options=options,
                              replicates=args.bootstrap,
                              overwrite=args.overwrite, **values)
        if written is not None:
            with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
                overall = written.table[written.table["grouping"] == "all"]  # the rest is in pcc.csv
                print(overall.drop(columns=["grouping", "group"]).to_string(index=False))
            print_written(written.paths)
    return 0


def _difficulty_check(args: argparse.Namespace, difficulty: dict[int, str]):
    """A check of each model's dataset against the difficulty ranking, run once the dataset is open and before its
    results folder is claimed: a ranking of another dataset's classes is refused before anything is written."""

    def check(cfg) -> None:
        from dhanalysis.metrics.groups import check_difficulty_classes
        from dhanalysis.data.coco import load_coco_json
        from dhanalysis.vocab import split_paths

        _, ann_file = split_paths(args.data_root or cfg.data.root, args.split or cfg.data.val_split)
        ids = [int(c["id"]) for c in load_coco_json(ann_file)["categories"]]  # the dataset has read them already
        flag_error("--difficulty-from", check_difficulty_classes, difficulty, ids,
                   f"per-class AP table {args.difficulty_from}", ann_file)

    return check

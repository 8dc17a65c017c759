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

Writes to OUT (several --ckpt: OUT/<model name>/): pcc.csv (model, head, proposal_set, grouping, group, mode, n,
pcc), pcc_stats.csv (the rpn/detection streaming sums n, sum_x, sum_x2, sum_s, sum_s2, sum_xs per model, head,
proposal_set, mode, size; tables of several shards merge by addition), pcc_summary.json, and the sliding-window
outputs when it computed them. Definitions in docs/analysis.md.

Absolute PCCs depend on the window grid (--grid) and on --rpn-background: compare heads analysed the same way, not
the paper's printed numbers.
"""

from __future__ import annotations

import argparse

from dhanalysis.cli.sliding_window import add_common_arguments, add_window_arguments

PCC_OUTPUTS = ("pcc.csv", "pcc.parquet", "pcc_stats.csv", "pcc_stats.parquet", "pcc_summary.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_window_arguments(parser)
    parser.add_argument("--difficulty-from", metavar="PATH",
                        help="per_class_ap.csv (dhanalysis eval) of the reference model that ranks class difficulty")
    parser.add_argument("--difficulty-model", help="the model in --difficulty-from, when it holds several")
    parser.add_argument("--difficulty-mode", help="the inference mode in --difficulty-from, when it holds several")
    parser.add_argument("--rpn-background", default="keep", metavar="{keep,drop}",
                        help="RPN proposals that overlap no ground-truth box: keep them in the rpn set with IoU 0 "
                             "(default), or drop them from it")


def run(args: argparse.Namespace) -> int:
    import time

    import pandas as pd

    from dhanalysis.analysis.groups import load_difficulty
    from dhanalysis.analysis.pcc import ProposalPCCTask, pcc_table
    from dhanalysis.analysis.runner import analyse, atomic_write_json, write_table
    from dhanalysis.cli.sliding_window import (claim_outputs, compute_sliding_window, iter_models,
                                               reusable_sliding_window, run_options, window_grid)

    grid = window_grid(args)
    rpn_background = _rpn_background(args)
    difficulty = None
    if args.difficulty_from:
        difficulty = load_difficulty(args.difficulty_from, args.difficulty_model, args.difficulty_mode)
    for model_run in iter_models(args):
        started = time.perf_counter()
        folder = model_run.folder
        key = {"analysis": "pcc", "config": model_run.config, **model_run.data_key}
        if rpn_background != "keep":  # absent at the default, so earlier results keep their identity
            key["rpn_background"] = rpn_background
        claim_outputs(model_run, [folder / f for f in PCC_OUTPUTS], folder / "pcc_summary.json", key, "PCC results",
                      args.overwrite)

        reused = not args.overwrite and reusable_sliding_window(model_run, args.proposals_per_gt, args.precision,
                                                                grid)
        if reused:
            stats = pd.read_csv(folder / "sliding_window_stats.csv") if model_run.rank == 0 else None
        else:
            stats = compute_sliding_window(model_run, args, args.raw_sample, args.seed)

        task = ProposalPCCTask(model_run.model, args.batch_size, rpn_background)
        merged = analyse(model_run.model, model_run.dataset, [task], folder / "chunks" / "pcc", key,
                         run_options(args), overwrite=args.overwrite, device=model_run.device)
        if merged is None:
            continue
        state = merged.states.get(task.name) or task.new_state()
        pcc_stats = task.frame(state, model_run.name)
        table = pcc_table(stats, pcc_stats, difficulty)
        written = write_table(table, folder / "pcc") + write_table(pcc_stats, folder / "pcc_stats")
        summary = {
            "run": key,
            "model": model_run.name,
            "checkpoint": str(model_run.ckpt),
            "heads_with_classifier": task.heads,
            "detection_modes": task.modes,
            "sliding_window_reused": reused,
            "proposals_per_gt": args.proposals_per_gt,
            "grid": grid,
            "rpn_background": rpn_background,
            "difficulty_from": args.difficulty_from,
            "images": len(merged.image_ids),
            "rpn_proposals": int(state.counts.get("rpn_proposals", 0)),
            "rpn_background_dropped": int(state.counts.get("rpn_background_dropped", 0)),
            "detections": int(state.counts.get("detections", 0)),
            "seconds_compute": merged.seconds,
            "seconds_wall": time.perf_counter() - started,
            "device": str(model_run.device),
        }
        atomic_write_json(folder / "pcc_summary.json", summary)
        with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
            print(table.to_string(index=False))
        print(f"wrote {', '.join(str(p) for p in written)}, {folder / 'pcc_summary.json'}")
    return 0


def _rpn_background(args: argparse.Namespace) -> str:
    """``--rpn-background``, checked: a one-line error naming the flag when it is not keep or drop."""
    from dhanalysis.analysis.pcc import check_rpn_background
    from dhanalysis.errors import DHError

    try:
        return check_rpn_background(args.rpn_background)
    except DHError as exc:
        raise DHError(f"--rpn-background: {exc}") from None

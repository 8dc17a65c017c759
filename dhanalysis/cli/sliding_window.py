"""Score ~14,000 sliding-window proposals around every ground-truth box with each head (paper §3.1, Fig. 2).

  dhanalysis sliding-window --ckpt checkpoints/synth-single-fc/model_final.pth --out results/synth-single-fc
  torchrun --nproc_per_node 8 -m dhanalysis sliding-window --ckpt fc.pth --ckpt conv.pth --out results/sw

Windows (--grid spiral, the default): the box moved on a golden-angle spiral of centre shifts (up to one box size)
times a spiral of log width / height ratios (sizes 0.37x to 2.7x), ~118 x 119 per box, clipped to the image; their
IoUs with the box spread evenly over 20 bins from 0 to 1. --grid sliding: a literal grid, x shift x y shift x width
x height (13 x 13 x 9 x 9 at 14000: shifts -0.85 to +0.61 box sizes, sizes 0.61x to 1.37x, each axis crowded
towards the box), every bin still 3.4% or more. PCCs depend on the grid: compare heads analysed with the same one
(docs/analysis.md). For every window and head: the softmax score of the box's class and the IoU of the window
regressed with that class's deltas.

Without --ckpt, every finished run under ./checkpoints (a folder holding model_final.pth) is analysed in turn,
named after its folder (checkpoints/synth-single-fc: synth-single-fc; a/b: a-b) and written to results/<name>.

Writes to OUT (several models: OUT/<model name>/; default results/<model name>):
  sliding_window_stats.csv  one row per (model, head, category, size, IoU bin) with n, n_s, n_r and the sums
                            sum_x, sum_x2, sum_s, sum_s2, sum_xs, sum_r, sum_r2, sum_xr (x = window IoU,
                            s = score, r = regressed IoU); means, stds and PCCs follow exactly from them
  sliding_window_objects.csv  one row per (object, head with a classifier): its windows' moments, and among its
                            windows with IoU >= --positive-iou (default 0.5) Spearman's rho, Kendall's tau-b, the
                            IoU of the top-scored window and the best IoU (the alignment measures of
                            'dhanalysis pcc'; docs/analysis.md)
  summary.json              images, boxes, windows, windows per box, the grid, per-bin counts, time, device
  config.json               the model's config
  raw_sample.csv            with --raw-sample K: K random windows per box (model, head, image_id, box, category_id,
                            size, iou, score, reg_iou)
Runs resume where they stopped (chunks/ holds finished chunks); another model's folder is refused without
--overwrite. Under torchrun, images are sharded over ranks and rank 0 writes the tables.

Scoring (--scoring fast, the default) pools with a gather form of RoIAlign and runs the heads as matmul chains with
BatchNorm folded (dhanalysis.model.gather_roi / fast_heads); --scoring reference runs the model's own probe
(torchvision RoIAlign, NCHW heads). Both give the same statistics to float32 rounding. --precision bf16 runs the
heads' matmuls in bf16 (worth it on GPUs and CPUs with bf16 units; see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse

from dhanalysis.flags import check_at_least, print_written
from dhanalysis.probes.flags import (add_model_arguments, add_run_arguments, add_window_arguments, models, run_options,
                                     window_values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dhanalysis.probes.sliding_window import DEFAULT_BATCH_SIZE

    add_model_arguments(parser)
    add_run_arguments(parser, DEFAULT_BATCH_SIZE)
    add_window_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dhanalysis.probes.sliding_window import compute_sliding_window
    from dhanalysis.folders import check_writable_folder
    from dhanalysis.model.checkpoint import check_model_names

    check_writable_folder(args.out or "results")  # before any model runs: results go under it
    check_model_names(args.ckpt, args.name)
    check_at_least(args, batch_size=1)
    values, options = window_values(args), run_options(args)  # bad flags fail before any model is loaded
    for model_run in models(args):
        written = compute_sliding_window(model_run, batch_size=args.batch_size, options=options,
                                         overwrite=args.overwrite, **values)
        if written is not None:
            s = written.summary
            print(f"{model_run.name}: {s['images']} images, {s['boxes']} boxes, {s['proposals']} windows "
                  f"({s['proposals_per_box']:.0f} per box)")
            print_written(written.paths)
    return 0

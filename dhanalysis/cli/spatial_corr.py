"""Spatial correlation of the heads' output maps and of fc6's weights (paper §3.4, Fig. 4).

  dhanalysis spatial-corr --ckpt double-head-ext.pth --max-images 500 --out results/synth-double-head-ext

Over ground-truth-box RoIs (crowd boxes left out), the cosine similarity between every pair of the S x S cells
(cell index y*S + x; 49 x 49 for S = 7), averaged over objects:
  conv_output  the conv-head's output map before average pooling;
  fc_output    the fc-head's reconstructed map: fc6's weight split by input cell, cell p's output is its C-d input
               through its own D x C block (the cells plus fc6's bias add up to fc6's output);
  fc_weight    fc6's weights themselves: cosine between the flattened per-cell blocks of two cells (no data).
Maps of heads the model lacks are left out; Double-FC / Double-Conv are read through their first (classification)
branch.

Without --ckpt, every finished run under ./checkpoints is analysed in turn (see 'dhanalysis sliding-window -h').

Writes to OUT (several models: OUT/<model name>/): spatial_corr.npz (keys conv_output, fc_output, fc_weight; float
arrays of shape (S*S, S*S)), spatial_corr.csv (model, map, cell_i, cell_j, value), spatial_summary.json.
"""

from __future__ import annotations

import argparse

from dhanalysis.flags import check_at_least, print_written
from dhanalysis.probes.flags import add_model_arguments, add_run_arguments, models, run_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dhanalysis.probes.spatial import DEFAULT_BATCH_SIZE

    add_model_arguments(parser)
    add_run_arguments(parser, DEFAULT_BATCH_SIZE)


def run(args: argparse.Namespace) -> int:
    from dhanalysis.probes.spatial import compute_spatial_corr
    from dhanalysis.folders import check_writable_folder
    from dhanalysis.model.checkpoint import check_model_names

    check_writable_folder(args.out or "results")  # before any model runs: results go under it
    check_model_names(args.ckpt, args.name)
    check_at_least(args, batch_size=1)
    options = run_options(args)
    for model_run in models(args):
        written = compute_spatial_corr(model_run, batch_size=args.batch_size, options=options,
                                       overwrite=args.overwrite)
        if written is not None:
            s = written.summary
            means = ", ".join(f"{k} {v:.3f}" for k, v in s["mean_off_diagonal"].items())
            print(f"{model_run.name}: {s['objects']} objects; mean off-diagonal cosine: {means}")
            print_written(written.paths)
    return 0

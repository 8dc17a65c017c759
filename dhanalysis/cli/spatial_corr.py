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

Writes to OUT (several --ckpt: OUT/<model name>/): spatial_corr.npz (keys conv_output, fc_output, fc_weight; float
arrays of shape (S*S, S*S)), spatial_corr.csv (model, map, cell_i, cell_j, value), spatial_summary.json.
"""

from __future__ import annotations

import argparse

from dhanalysis.cli.sliding_window import add_common_arguments

SPATIAL_OUTPUTS = ("spatial_corr.npz", "spatial_corr.csv", "spatial_corr.parquet", "spatial_summary.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, batch_size=256)


def run(args: argparse.Namespace) -> int:
    import io
    import time

    import numpy as np

    from dhanalysis.analysis.runner import analyse, atomic_write_bytes, atomic_write_json, write_table
    from dhanalysis.analysis.spatial import SpatialTask, spatial_frame
    from dhanalysis.cli.sliding_window import claim_outputs, iter_models, run_options

    for model_run in iter_models(args):
        started = time.perf_counter()
        folder = model_run.folder
        key = {"analysis": "spatial-corr", "config": model_run.config, **model_run.data_key}
        claim_outputs(model_run, [folder / f for f in SPATIAL_OUTPUTS], folder / "spatial_summary.json", key,
                      "spatial-correlation results", args.overwrite)
        task = SpatialTask(model_run.model, args.batch_size)
        merged = analyse(model_run.model, model_run.dataset, [task], folder / "chunks" / "spatial_corr", key,
                         run_options(args), overwrite=args.overwrite, device=model_run.device)
        if merged is None:
            continue
        maps = task.result(merged.states.get(task.name) or task.new_state())
        buffer = io.BytesIO()
        np.savez(buffer, **maps)
        atomic_write_bytes(folder / "spatial_corr.npz", buffer.getvalue())
        written = [folder / "spatial_corr.npz"] + write_table(spatial_frame(maps, model_run.name),
                                                               folder / "spatial_corr")
        state = merged.states.get(task.name)
        objects = int(state.counts.get("objects", 0)) if state else 0
        summary = {
            "run": key,
            "model": model_run.name,
            "checkpoint": str(model_run.ckpt),
            "maps": list(maps),
            "branches": task.branches,
            "images": len(merged.image_ids),
            "objects": objects,
            "mean_off_diagonal": {k: float((v.sum() - np.trace(v)) / (v.size - len(v))) for k, v in maps.items()},
            "seconds_compute": merged.seconds,
            "seconds_wall": time.perf_counter() - started,
            "device": str(model_run.device),
        }
        atomic_write_json(folder / "spatial_summary.json", summary)
        means = ", ".join(f"{k} {v:.3f}" for k, v in summary["mean_off_diagonal"].items())
        print(f"{model_run.name}: {objects} objects; mean off-diagonal cosine: {means}")
        print(f"wrote {', '.join(str(p) for p in written)}, {folder / 'spatial_summary.json'}")
    return 0

"""What the commands that read checkpoints share: their flags, the workspace's models when no --ckpt is given, and
the translation of flags into the library's plain values (a bad flag fails here, named, before a model is loaded).

`eval`, `sliding-window`, `pcc` and `spatial-corr` use it; so may a model analysis that defines its own command.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dhanalysis.errors import DHError
from dhanalysis.flags import check_at_least, flag_error

TRAIN_HINT = "dhanalysis train --config configs/synth/single-fc.yaml --out checkpoints/synth-single-fc"


# ------------------------------------------------------------------------------------------------ flags
def add_model_arguments(parser: argparse.ArgumentParser, workspace: bool = True) -> None:
    """Which models, on which data, into which folder. With ``workspace``, --ckpt may be left out: the command then
    takes every finished run under ./checkpoints."""
    if workspace:
        parser.add_argument("--ckpt", action="append", default=[],
                            help="checkpoint file (repeatable; default: every finished run under ./checkpoints, "
                                 "written to results/<run folder>)")
    else:
        parser.add_argument("--ckpt", action="append", required=True, help="checkpoint file (repeatable)")
    parser.add_argument("--name", action="append", default=[],
                        help="model name per --ckpt (default: the checkpoint config's name)")
    parser.add_argument("--data-root", help="dataset folder (default: the checkpoint config's data.root)")
    parser.add_argument("--split", help="split to read (default: the config's data.val_split)")
    parser.add_argument("--max-images", type=int, help="read the first N images of the split only")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--out", help="output folder (several models: one subfolder per model; "
                                      "default results/<model name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results of another model or configuration in the output folder")


def add_run_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """How an analysis runs: batch, resumable chunks, decoding workers, progress."""
    from dhanalysis.probes.harness import DEFAULT_CHUNK_SIZE

    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help=f"boxes per RoIAlign + head forward (default {batch_size}; halved on out-of-memory)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"images per resumable chunk (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="decode every image first and leave out the missing or undecodable ones (default: such "
                             "an image is an error)")


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """The sliding-window grid and how its windows are scored (sliding-window, pcc)."""
    from dhanalysis.probes.proposals import DEFAULT_GRID, DEFAULT_PROPOSALS_PER_GT, GRID_KINDS

    parser.add_argument("--proposals-per-gt", type=int, default=DEFAULT_PROPOSALS_PER_GT,
                        help=f"sliding windows per ground-truth box (default {DEFAULT_PROPOSALS_PER_GT}, the paper's "
                             "'about 14,000')")
    parser.add_argument("--grid", default=DEFAULT_GRID, metavar="{" + ",".join(GRID_KINDS) + "}",
                        help="the window grid around each box (the paper does not give one): spiral, golden-angle "
                             "spirals of shifts and sizes (default); sliding, a product of x-shift, y-shift, width and "
                             "height axes. PCCs depend on it: compare heads analysed with the same grid")
    parser.add_argument("--raw-sample", type=int, default=0, metavar="K",
                        help="also keep K random windows per box as raw rows (raw_sample.csv), for scatter plots")
    parser.add_argument("--seed", type=int, default=0, help="seed of the raw sample (default 0)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="matmul precision of the heads while scoring windows (default fp32; bf16 pays off on "
                             "GPUs and CPUs with bf16 units, and its per-bin means stay within 0.01 of fp32)")
    parser.add_argument("--scoring", choices=("fast", "reference"), default="fast",
                        help="fast: gather RoIAlign + matmul heads (default); reference: the model's own probe "
                             "(torchvision RoIAlign, NCHW heads), fp32 only. Both give the same statistics")
    from dhanalysis.metrics.measures import add_positive_iou_argument

    add_positive_iou_argument(parser)


def window_values(args: argparse.Namespace) -> dict:
    """The sliding-window flags as `compute_sliding_window`'s keyword values, checked with flag-named errors."""
    from dhanalysis.probes.proposals import check_grid_kind

    check_at_least(args, proposals_per_gt=1, raw_sample=0)
    flag_error("--grid", check_grid_kind, args.grid)
    if args.scoring == "reference" and args.precision != "fp32":
        raise DHError("--scoring reference runs in fp32 only; drop --precision bf16 or use --scoring fast")
    from dhanalysis.metrics.measures import positive_bin

    flag_error("--positive-iou", positive_bin, args.positive_iou)
    return {"proposals_per_gt": args.proposals_per_gt, "raw_sample": args.raw_sample, "seed": args.seed,
            "precision": args.precision, "scoring": args.scoring, "grid": args.grid,
            "positive_iou": args.positive_iou}


def run_options(args: argparse.Namespace):
    """--chunk-size, --workers, --no-progress as `RunOptions` (--max-images goes with the model: it is part of every
    result's key)."""
    from dhanalysis.probes.harness import RunOptions

    check_at_least(args, chunk_size=1, workers=0)
    return RunOptions(chunk_size=args.chunk_size, workers=args.workers, progress=not args.no_progress)


# ------------------------------------------------------------------------------------------------ models
def workspace_checkpoints(root: Path = Path("checkpoints")) -> dict[str, Path]:
    """Every finished run under ``root`` by name; none is a one-line error saying how to make one."""
    from dhanalysis.probes.harness import finished_runs
    from dhanalysis.vocab import FINAL_CHECKPOINT

    runs = finished_runs(root)
    if not runs:
        convert = f", convert one ('dhanalysis convert ... --out checkpoints/NAME/{FINAL_CHECKPOINT}')"
        raise DHError(f"no --ckpt given and no finished run ({FINAL_CHECKPOINT}) under {root.resolve()}; train one "
                      f"('{TRAIN_HINT}'){convert} or pass --ckpt FILE")
    return runs


def models(args: argparse.Namespace, **dataset: Any) -> Iterator:
    """Each model of --ckpt (or, without it, of the workspace) in turn, loaded with its dataset and its results
    folder claimed (`dhanalysis.probes.harness.load_models`). ``dataset``: `load_models`'s dataset options."""
    import logging

    from dhanalysis.probes.harness import load_models

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    check_at_least(args, max_images=1)
    ckpts, names = list(args.ckpt), list(args.name)
    if names and not ckpts:
        raise DHError("--name names the models of --ckpt; give --ckpt too")
    if names and len(names) != len(ckpts):
        raise DHError(f"give one --name per --ckpt ({len(ckpts)} checkpoints, {len(names)} names)")
    taken = not ckpts
    if taken:
        runs = workspace_checkpoints()
        ckpts, names = [str(p) for p in runs.values()], list(runs)
    dataset.setdefault("skip_bad_images", getattr(args, "skip_bad_images", False))  # eval passes its own
    loaded = load_models(ckpts, names or None, data_root=args.data_root, split=args.split, out=args.out,
                         max_images=args.max_images, overwrite=args.overwrite, device=args.device, **dataset)
    for i, run in enumerate(loaded, 1):
        if taken and run.rank == 0:
            print(f"[{i}/{len(ckpts)}] {run.name}: {run.ckpt} -> {run.folder}", flush=True)
        yield run

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

Writes to OUT (several --ckpt: OUT/<model name>/; default results/<model name>):
  sliding_window_stats.csv  one row per (model, head, category, size, IoU bin) with n, n_s, n_r and the sums
                            sum_x, sum_x2, sum_s, sum_s2, sum_xs, sum_r, sum_r2, sum_xr (x = window IoU,
                            s = score, r = regressed IoU); means, stds and PCCs follow exactly from them
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DEFAULT_BATCH_SIZE = 2048
SLIDING_WINDOW_OUTPUTS = ("sliding_window_stats.csv", "sliding_window_stats.parquet", "summary.json",
                          "raw_sample.csv", "raw_sample.parquet")


# ------------------------------------------------------------------------------------ shared by the analysis commands
def add_common_arguments(parser: argparse.ArgumentParser, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
    """Options every analysis command takes: models, data, output folder, device, resume and scale-out."""
    parser.add_argument("--ckpt", action="append", required=True, help="checkpoint file (repeatable)")
    parser.add_argument("--name", action="append", default=[],
                        help="model name per --ckpt (default: the checkpoint config's name)")
    parser.add_argument("--data-root", help="dataset folder (default: the checkpoint config's data.root)")
    parser.add_argument("--split", help="split to analyse (default: the config's data.val_split)")
    parser.add_argument("--max-images", type=int, help="analyse the first N images of the split only")
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help=f"boxes per RoIAlign + head forward (default {batch_size}; halved on out-of-memory)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--out", help="output folder (several --ckpt: one subfolder per model; "
                                      "default results/<model name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results of another model or configuration in the output folder")
    parser.add_argument("--chunk-size", type=int, default=50,
                        help="images per resumable chunk (default 50)")
    parser.add_argument("--workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--proposals-per-gt", type=int, default=14_000,
                        help="sliding windows per ground-truth box (default 14000, the paper's 'about 14,000')")
    parser.add_argument("--grid", default="spiral", metavar="{spiral,sliding}",
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


@dataclass
class ModelRun:
    """One --ckpt resolved: its model, dataset, output folder and the data part of every result's identity."""

    ckpt: str
    name: str
    model: Any
    dataset: Any
    folder: Path
    device: Any
    config: dict
    data_key: dict
    rank: int


def setup_device(args: argparse.Namespace):
    """Validate --device, join torchrun's process group if launched by it, and return this rank's device."""
    import torch

    from dhanalysis.engine.distributed import init_distributed, resolve_device

    requested = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolve_device(requested)  # a one-line DHError when CUDA is asked for and absent
    init_distributed(requested)
    return resolve_device(requested)


def iter_models(args: argparse.Namespace) -> Iterator[ModelRun]:
    """Load each --ckpt in turn (one model in memory at a time) with its dataset and output folder."""
    import logging

    from dhanalysis.analysis.runner import open_dataset, prepare_model_folder
    from dhanalysis.config import config_to_dict
    from dhanalysis.engine.distributed import get_rank
    from dhanalysis.errors import DHError
    from dhanalysis.model.checkpoint import load_checkpoint

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.name and len(args.name) != len(args.ckpt):
        raise DHError(f"give one --name per --ckpt ({len(args.ckpt)} checkpoints, {len(args.name)} names)")
    if args.max_images is not None and args.max_images < 1:
        raise DHError(f"--max-images must be at least 1, got {args.max_images}")
    device = setup_device(args)
    seen: set[str] = set()
    for i, ckpt in enumerate(args.ckpt):
        model = load_checkpoint(ckpt, map_location=device)
        cfg = model.config
        name = args.name[i] if args.name else cfg.name
        if not name or "/" in name or name in (".", ".."):
            raise DHError(f"model name '{name}' cannot name a folder; give --name")
        if name in seen:
            raise DHError(f"two checkpoints are both named '{name}'; give each a --name")
        seen.add(name)
        root = Path(args.data_root or cfg.data.root)
        split = args.split or cfg.data.val_split
        dataset = open_dataset(root, split, cfg.model.num_classes, ckpt)
        if args.out:
            folder = Path(args.out) / name if len(args.ckpt) > 1 else Path(args.out)
        else:
            folder = Path("results") / name
        config = config_to_dict(cfg)
        rank = get_rank()
        prepare_model_folder(folder, config, args.overwrite, rank)
        data_key = {"data_root": str(root.resolve()), "split": split, "max_images": args.max_images}
        yield ModelRun(ckpt, name, model, dataset, folder, device, config, data_key, rank)


def claim_outputs(run: ModelRun, outputs: list[Path], summary: Path, key: dict, what: str, overwrite: bool) -> None:
    """Make ``run.folder`` ours: with ``overwrite`` rank 0 removes ``outputs``; otherwise results of another model or
    configuration (``summary``'s stored key differs from ``key``) are refused with a one-line error."""
    from dhanalysis.analysis.runner import check_identity, remove_paths
    from dhanalysis.engine.distributed import barrier

    if overwrite:
        if run.rank == 0:
            remove_paths(outputs)
        barrier()
    else:
        check_identity(summary, key, what)


def run_options(args: argparse.Namespace):
    from dhanalysis.analysis.runner import RunOptions

    return RunOptions(chunk_size=args.chunk_size, max_images=args.max_images, workers=args.workers,
                      progress=not args.no_progress)


# ------------------------------------------------------------------------------------ this command
def sliding_window_key(run: ModelRun, proposals_per_gt: int, raw_sample: int, seed: int,
                       precision: str = "fp32", grid: str = "spiral") -> dict:
    """What a sliding-window result depends on; ``raw_sample`` and ``seed`` only change raw_sample.csv.

    ``precision`` enters only when it is not fp32 and ``grid`` only when it is not spiral, so default results keep
    the identity they had before the options existed; the scoring path (fast or reference) changes nothing beyond
    float32 rounding and is a run option.
    """
    key = {"analysis": "sliding-window", "config": run.config, **run.data_key, "proposals_per_gt": proposals_per_gt,
           "raw_sample": raw_sample, "seed": seed}
    if precision != "fp32":
        key["precision"] = precision
    if grid != "spiral":
        key["grid"] = grid
    return key


def window_grid(args: argparse.Namespace) -> str:
    """``--grid``, checked: a one-line error naming the flag when it is not a grid kind."""
    from dhanalysis.analysis.proposals import check_grid_kind
    from dhanalysis.errors import DHError

    grid = getattr(args, "grid", "spiral")
    try:
        return check_grid_kind(grid)
    except DHError as exc:
        raise DHError(f"--grid: {exc}") from None


def reusable_sliding_window(run: ModelRun, proposals_per_gt: int, precision: str = "fp32",
                            grid: str = "spiral") -> bool:
    """True when ``run.folder`` holds a finished sliding-window result with the same model, data, density and
    grid."""
    import json

    summary = run.folder / "summary.json"
    if not summary.is_file() or not (run.folder / "sliding_window_stats.csv").is_file():
        return False
    try:
        stored = json.loads(summary.read_text()).get("run", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False
    wanted = sliding_window_key(run, proposals_per_gt, 0, 0, precision, grid)
    ignore = ("raw_sample", "seed")
    return {k: v for k, v in stored.items() if k not in ignore} == {k: v for k, v in wanted.items() if k not in ignore}


def compute_sliding_window(run: ModelRun, args: argparse.Namespace, raw_sample: int, seed: int):
    """Run (or resume) the sliding-window analysis of one model and write its outputs; rank 0 returns the table."""
    import time

    from dhanalysis.analysis.proposals import grid_info
    from dhanalysis.analysis.runner import analyse, atomic_write_json, iter_rows, write_table
    from dhanalysis.analysis.scoring import SlidingWindowTask, bin_counts

    started = time.perf_counter()
    precision = getattr(args, "precision", "fp32")
    fast = getattr(args, "scoring", "fast") == "fast"
    if not fast and precision != "fp32":
        from dhanalysis.errors import DHError

        raise DHError("--scoring reference runs in fp32 only; drop --precision bf16 or use --scoring fast")
    grid = window_grid(args)
    key = sliding_window_key(run, args.proposals_per_gt, raw_sample, seed, precision, grid)
    outputs = [run.folder / f for f in SLIDING_WINDOW_OUTPUTS]
    claim_outputs(run, outputs, run.folder / "summary.json", key, "sliding-window results", args.overwrite)
    task = SlidingWindowTask(run.model, run.dataset.num_classes, args.batch_size, args.proposals_per_gt, raw_sample,
                             seed, fast=fast, precision=precision, grid_kind=grid)
    merged = analyse(run.model, run.dataset, [task], run.folder / "chunks" / "sliding_window", key, run_options(args),
                     overwrite=args.overwrite, device=run.device)
    if merged is None:
        return None
    cat_ids = [run.dataset.label_to_cat_id[k] for k in range(1, run.dataset.num_classes + 1)]
    state = merged.states.get(task.name) or task.new_state()
    stats = task.frame(state, run.name, cat_ids, list(run.dataset.category_names))
    written = write_table(stats, run.folder / "sliding_window_stats")
    if raw_sample > 0:
        import pandas as pd

        parts = [task.raw_frame(rows, run.name, cat_ids) for rows in iter_rows(merged.chunk_dir, task.name,
                                                                               "raw_sample")]
        raw = pd.concat(parts, ignore_index=True) if parts else task.raw_frame(_empty_rows(), run.name, cat_ids)
        written += write_table(raw, run.folder / "raw_sample")
    boxes = int(merged.counts.get("boxes", 0))
    windows = int(state.counts.get("windows", 0))
    summary = {
        "run": key,
        "model": run.name,
        "checkpoint": str(run.ckpt),
        "heads": task.heads,
        "images": len(merged.image_ids),
        "images_without_boxes": int(merged.counts.get("images_without_boxes", 0)),
        "boxes": boxes,
        "crowd_boxes_skipped": int(merged.counts.get("crowd_boxes_skipped", 0)),
        "proposals": windows,
        "proposals_per_box": windows / boxes if boxes else 0.0,
        "grid": grid_info(args.proposals_per_gt, grid),
        "bin_edges": [b / 20 for b in range(21)],
        "bin_counts": bin_counts(stats),
        "seconds_compute": merged.seconds,
        "seconds_wall": time.perf_counter() - started,
        "device": str(run.device),
        "world_size": _world_size(),
        "batch_size_final": task.batcher.size,
        "scoring": "fast" if fast else "reference",
        "precision": precision,
    }
    atomic_write_json(run.folder / "summary.json", summary)
    print(f"{run.name}: {summary['images']} images, {boxes} boxes, {windows} windows "
          f"({summary['proposals_per_box']:.0f} per box); wrote {', '.join(str(p) for p in written)}, "
          f"{run.folder / 'summary.json'}")
    return stats


def _empty_rows():
    import torch

    return torch.zeros(0, 8, dtype=torch.float64)


def _world_size() -> int:
    from dhanalysis.engine.distributed import get_world_size

    return get_world_size()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_window_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from dhanalysis.errors import DHError

    if args.raw_sample < 0:
        raise DHError(f"--raw-sample must be 0 or more, got {args.raw_sample}")
    window_grid(args)  # a bad --grid fails before any model is loaded
    for model_run in iter_models(args):
        compute_sliding_window(model_run, args, args.raw_sample, args.seed)
    return 0

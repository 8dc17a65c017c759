"""Train a model from a config, on CPU, one GPU, or many with torchrun.

  dhanalysis train --config configs/synth/single-fc.yaml --out checkpoints/synth-single-fc
  torchrun --nproc_per_node 8 -m dhanalysis train --config configs/coco/r50/double-head-ext.yaml \\
      --out checkpoints/r50-ext --data-root data/coco

Writes config.yaml, metrics.jsonl (one JSON line per logging step: iteration, lr, every loss term, time/iter), an
atomic checkpoint.pth every train.checkpoint_period iterations and model_final.pth at the end. --resume continues from
the last checkpoint, bitwise on CPU. train.lr is for train.ims_per_batch images over all processes; --ims-per-batch
changes the total batch and scales the LR linearly and the schedule inversely.
"""

from __future__ import annotations

import argparse

from dhanalysis.flags import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/synth/double-head-ext.yaml")
    parser.add_argument("--out", required=True, help="output folder, e.g. checkpoints/NAME")
    parser.add_argument("--data-root", help="dataset folder (default: the config's data.root)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.iterations=100 (repeatable)")
    parser.add_argument("--ims-per-batch", type=positive_int, help="total images per iteration (linear LR scaling)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard a previous run in --out (not with --resume, which continues it)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")


def run(args: argparse.Namespace) -> int:
    import logging

    from dhanalysis.config import load_config
    from dhanalysis.engine.train import scale_schedule, train
    from dhanalysis.errors import DHError
    from dhanalysis.folders import check_writable_folder

    check_writable_folder(args.out)
    if args.resume and args.overwrite:  # overwrite would win and retrain a finished run from scratch
        raise DHError("--resume continues the run in --out and --overwrite discards it; pass one of them, not both")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(args.overrides) + ([f"data.root={args.data_root}"] if args.data_root else [])
    cfg = load_config(args.config, overrides)  # every value range-checked: nothing is written for a bad one
    if args.ims_per_batch is not None:
        cfg = scale_schedule(cfg, args.ims_per_batch)
    train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device)
    return 0

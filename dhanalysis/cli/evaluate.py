"""COCO box AP of one or more checkpoints, every applicable inference mode in one pass.

  dhanalysis eval --ckpt checkpoints/synth-double-head-ext/model_final.pth --out results/synth-double-head-ext

Writes eval.csv (model, mode, AP, AP50, AP75, APs, APm, APl; AP values are fractions in [0, 1]), per_class_ap.csv
(model, mode, category_id, category, AP; the analyses rank class difficulty from it) and detections_<mode>.json (COCO
results format, original category ids). With several --ckpt, each model's results go to OUT/<model name>/. A folder
holding another model's results (its config.json differs) is refused without --overwrite.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", action="append", required=True, help="checkpoint file (repeatable)")
    parser.add_argument("--name", action="append", default=[], help="model name per --ckpt (default: config name)")
    parser.add_argument("--data-root", help="dataset folder (default: the checkpoint config's data.root)")
    parser.add_argument("--split", help="split to evaluate (default: the config's data.val_split)")
    parser.add_argument("--modes", default="all", help="comma-separated inference modes, or 'all' (default)")
    parser.add_argument("--out", help="output folder (default: results/<model name>)")
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    parser.add_argument("--strict", action="store_true", help="fail on an undecodable image instead of skipping it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace results of another model or configuration in the output folder")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    import pandas as pd

    from dhanalysis.analysis.runner import prepare_model_folder
    from dhanalysis.config import config_to_dict
    from dhanalysis.data.coco import CocoDataset
    from dhanalysis.engine.distributed import get_rank, init_distributed, is_main, resolve_device
    from dhanalysis.engine.evaluate import evaluate
    from dhanalysis.errors import DHError
    from dhanalysis.model.checkpoint import load_checkpoint
    from dhanalysis.model.variants import check_mode

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.name and len(args.name) != len(args.ckpt):
        raise DHError(f"give one --name per --ckpt ({len(args.ckpt)} checkpoints, {len(args.name)} names)")
    device = resolve_device(args.device)
    init_distributed(device.type)
    for i, ckpt in enumerate(args.ckpt):
        model = load_checkpoint(ckpt, map_location=device)
        cfg = model.config
        name = args.name[i] if args.name else cfg.name
        root = args.data_root or cfg.data.root
        split = args.split or cfg.data.val_split
        dataset = CocoDataset(root, split, train=False, strict=args.strict, skip_bad_images=not args.strict)
        if dataset.num_classes != cfg.model.num_classes:
            raise DHError(f"{ckpt} was trained for {cfg.model.num_classes} classes but {root}/{split} has "
                          f"{dataset.num_classes}; evaluate on the dataset it was trained on")
        if args.modes == "all":
            modes = None
        else:
            modes = [m.strip() for m in args.modes.split(",") if m.strip()]
            for mode in modes:  # before any file is written
                check_mode(cfg.model.variant, cfg.model.loss, mode)
        if args.out:
            out = Path(args.out) / name if len(args.ckpt) > 1 else Path(args.out)
        else:
            out = Path("results") / name
        prepare_model_folder(out, config_to_dict(cfg), args.overwrite, get_rank())
        table, _ = evaluate(model, dataset, modes, device, args.batch_size, args.max_images, out, name)
        if is_main():
            with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 160):
                print(table.to_string(index=False))
            print(f"wrote {out / 'eval.csv'}, {out / 'per_class_ap.csv'} and detections_<mode>.json")
    return 0

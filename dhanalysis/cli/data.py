"""Make datasets in the COCO layout that training and evaluation read (root/<split>/, root/annotations/).

  dhanalysis data synth --out data/synth           the synthetic shapes set (train/val, six classes), CPU-sized
  dhanalysis data voc2coco --voc-root VOC2007 --out data/voc07   Pascal VOC converted to COCO json

Train on a result with: dhanalysis train ... --data-root <out> --set data.train_split=<split>
--set data.val_split=<split> (the configs/synth presets already read data/synth with splits train and val).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dhanalysis.flags import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="write the synthetic shapes dataset (reused when already complete)")
    synth.add_argument("--out", default="data/synth", help="output folder (default: %(default)s)")
    synth.add_argument("--num-train", type=non_negative_int, default=600,
                       help="training images (default: %(default)s)")
    synth.add_argument("--num-val", type=non_negative_int, default=100,
                       help="validation images (default: %(default)s)")
    synth.add_argument("--num-test", type=non_negative_int, default=0,
                       help="held-out test images, drawn from their own seeds "
                       "with ids from 1,000,001: report on them what was tuned on val (default: %(default)s)")
    synth.add_argument("--image-size", type=positive_int, default=320,
                       help="side of the square images (default: %(default)s)")
    synth.add_argument("--seed", type=non_negative_int, default=0, help="same seed, same files (default: %(default)s)")
    synth.add_argument("--max-objects", type=positive_int, default=6,
                       help="objects per image at most (default: %(default)s)")
    synth.add_argument("--clutter", type=float, default=1.0,
                       help="background clutter, 0 (plain gradient) to 2 (default: %(default)s)")
    synth.add_argument("--max-occlusion", type=float, default=0.5,
                       help="hidden fraction of an object beyond which it is not kept, 0 to <1 (default: %(default)s)")
    synth.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg",
                       help="image file format (default: %(default)s)")
    synth.add_argument("--overwrite", action="store_true",
                       help="write into a folder holding other files or another synthetic dataset, deleting only the "
                            "synthetic dataset's own files; also regenerates the same dataset")

    voc = sub.add_parser("voc2coco", help="convert a Pascal VOC folder to the COCO layout")
    voc.add_argument("--voc-root", required=True, help="VOC folder with JPEGImages/, Annotations/, ImageSets/Main/")
    voc.add_argument("--out", default="data/voc", help="output folder (default: %(default)s)")
    voc.add_argument("--splits", nargs="+", default=["trainval", "test"],
                     help="ImageSets/Main split names to convert (default: trainval test)")
    voc.add_argument("--overwrite", action="store_true",
                     help="convert into a folder that holds other files (only the converted files are replaced)")


def _summary_line(split: str, ann_file: Path) -> str:
    from dhanalysis.data.coco import summarize_coco_json

    s = summarize_coco_json(ann_file)
    groups = " / ".join(f"{n} {g}" for g, n in s["size_groups"].items())
    crowd = f", {s['crowd']} crowd/difficult" if s["crowd"] else ""
    return (f"  {split}: {s['images']} images, {s['boxes']} boxes ({groups}{crowd}), "
            f"{len(s['classes'])} classes: {', '.join(s['classes'])}")


def run(args: argparse.Namespace) -> int:
    from dhanalysis.folders import check_writable_folder

    check_writable_folder(args.out)
    started = time.perf_counter()
    if args.data_command == "synth":
        from dhanalysis.data.synth import make_synth_dataset

        result = make_synth_dataset(
            args.out, num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
            image_size=args.image_size, seed=args.seed,
            max_objects=args.max_objects, clutter=args.clutter, max_occlusion=args.max_occlusion,
            image_format=args.image_format, overwrite=args.overwrite,
        )
        verb = "kept the existing" if result.reused else "wrote the"
        print(f"{verb} synthetic dataset in {result.root} ({time.perf_counter() - started:.1f}s)")
        ann_files = result.ann_files
    else:
        from dhanalysis.data.voc import voc_to_coco

        ann_files = voc_to_coco(args.voc_root, args.out, splits=args.splits, overwrite=args.overwrite)
        print(f"converted {args.voc_root} to COCO format in {args.out} ({time.perf_counter() - started:.1f}s)")
    annotations = Path(args.out) / "annotations"
    print(f"  images in {Path(args.out)}/<split>/, annotations in {annotations}/instances_<split>.json")
    for split, ann_file in ann_files.items():
        print(_summary_line(split, ann_file))
    splits = list(ann_files)
    train, val = splits[0], splits[-1]
    print(f"train/evaluate on it with: --data-root {args.out} --set data.train_split={train} "
          f"--set data.val_split={val}")
    return 0

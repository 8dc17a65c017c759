"""Write a detector trained elsewhere as a dhanalysis checkpoint that every command accepts (nothing is downloaded).

  dhanalysis convert --from torchvision fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --out ckpt/tv-fpn.pth
  dhanalysis convert --from detectron2 model_final_b275ba.pkl --out ckpt/d2-fpn.pth
  dhanalysis convert --from mmdet dh_faster_rcnn_r50_fpn_1x_coco_20200130-586b67df.pth --out ckpt/mmdet-dh.pth
  dhanalysis convert --from maskrcnn-benchmark dh_faster_rcnn_R_50_FPN_1x.pth --out ckpt/dh-ext-r50.pth

Every source key is mapped or dropped for a stated reason; unknown or missing keys are an error. See
docs/published-models.md for where each source's weights are published and what differs from its framework.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dhanalysis.model.convert import SOURCES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="{" + ",".join(SOURCES) + "}",
                        help="the framework that wrote SRC")
    parser.add_argument("src", metavar="SRC", help="the downloaded weights file")
    parser.add_argument("--out", required=True, help="the checkpoint to write (DST.pth)")
    parser.add_argument("--categories", metavar="JSON",
                        help="a COCO-format annotation file whose category ids the labels read from a classifier "
                             "indexed by category id (torchvision's 91 slots); default COCO's 80")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config setting applied after the source's (e.g. data.root=data/coco)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def read_category_ids(path: str) -> tuple[int, ...]:
    """The sorted category ids of a COCO-format annotation file (the order labels 1..C follow)."""
    from dhanalysis.errors import DHError

    try:
        data = json.loads(Path(path).read_text())
        ids = sorted(int(c["id"]) for c in data["categories"])
    except FileNotFoundError:
        raise DHError(f"--categories {path} does not exist") from None
    except (ValueError, KeyError, TypeError):
        raise DHError(f"--categories {path} is not a COCO-format file with a 'categories' list of ids") from None
    if not ids:
        raise DHError(f"--categories {path} lists no categories")
    return tuple(ids)


def run(args: argparse.Namespace) -> int:
    from dhanalysis.errors import DHError
    from dhanalysis.folders import check_writable_file
    from dhanalysis.model.convert import convert_file

    check_writable_file(args.out, example="model.pth")
    if args.source not in SOURCES:
        raise DHError(f"unknown --from '{args.source}'; choose one of: {', '.join(SOURCES)}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise DHError(f"{out} exists; rerun with --overwrite to replace it, or choose another --out")
    category_ids = read_category_ids(args.categories) if args.categories else None
    cfg = convert_file(args.source, args.src, out, category_ids, args.overrides)
    m = cfg.model
    print(f"wrote {out}: {m.variant}, {m.backbone.name}, {m.num_classes} classes, inference mode "
          f"{m.mode or 'default'} (from {args.source} {Path(args.src).name})")
    return 0

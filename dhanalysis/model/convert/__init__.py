"""Detectors trained elsewhere as ordinary dhanalysis checkpoints (``dhanalysis convert``).

One module per source framework holds its rule table (source key -> our key, or dropped and why) and the config its
weights need; `convert_source` reads the file, maps it, builds the model and loads it strictly. docs/published-models.md
says where each source's weights are published and what differs from the source framework.

    torchvision          fasterrcnn_resnet50_fpn (the FPN baseline, Single-FC)
    detectron2           faster_rcnn_R_50_FPN_* / R_101 (Single-FC)
    mmdet                dh_faster_rcnn_r50_fpn_1x_coco (Double-Head: fc-head classifies, conv-head regresses)
    maskrcnn-benchmark   the authors' Double-Head-Ext releases, or a plain FPN model (Single-FC)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhanalysis.config import Config, apply_overrides, apply_values, config_from_dict
from dhanalysis.errors import DHError

# source name -> its module here; read by `dhanalysis convert` for its choices, so importing this table (and not
# the converters, which import torch) keeps the command line light
SOURCES = {
    "torchvision": "from_torchvision",
    "detectron2": "from_detectron2",
    "mmdet": "from_mmdet",
    "maskrcnn-benchmark": "from_maskrcnn_benchmark",
}
# COCO's 80 category ids, the slots of torchvision's 91-way COCO classifier that a COCO dataset's labels read
COCO_CATEGORY_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)
)


@dataclass
class Conversion:
    """What a source module returns: the settings its weights need (``{dotted.key: value}``), our state dict, and
    every dropped source key with the reason."""

    settings: dict[str, Any]
    weights: dict
    dropped: dict[str, str] = field(default_factory=dict)


def convert_source(source: str, src: str | Path, category_ids: tuple[int, ...] | None = None,
                   overrides: list[str] | None = None):
    """The model of ``src`` (a file of ``source``'s format), loaded strictly, and the dropped keys with reasons.

    ``category_ids``: the dataset's category ids, in label order (sorted), for classifiers indexed by category id
    (torchvision's 91 COCO slots); default COCO's 80. ``overrides``: the user's ``key=value`` strings, applied over
    the converter's settings (the user's win).
    """
    from dhanalysis.model.convert.common import load_converted, read_source

    if source not in SOURCES:
        raise DHError(f"unknown source '{source}'; choose one of: {', '.join(SOURCES)}")
    module = importlib.import_module(f"dhanalysis.model.convert.{SOURCES[source]}")
    data = read_source(src)
    conversion: Conversion = module.convert(data, str(src), tuple(category_ids or COCO_CATEGORY_IDS))
    name = Path(src).stem.replace(".", "-")
    values = {"name": name, "model.backbone.weights": None, **conversion.settings}
    cfg = config_from_dict(apply_overrides(apply_values({}, values), overrides))
    model = load_converted(cfg, conversion.weights, str(src))
    return model, conversion.dropped


def convert_file(source: str, src: str | Path, out: str | Path, category_ids: tuple[int, ...] | None = None,
                 overrides: list[str] | None = None) -> Config:
    """Convert ``src`` and write the checkpoint ``out`` (weights_only-loadable, whole config inside)."""
    from dhanalysis.model.checkpoint import save_checkpoint

    model, dropped = convert_source(source, src, category_ids, overrides)
    reasons: dict[str, int] = {}
    for reason in dropped.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    save_checkpoint(out, model, converted_from={"source": source, "file": Path(src).name, "dropped": reasons})
    return model.config

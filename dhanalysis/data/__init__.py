"""Datasets in the COCO layout: the dataset class, transforms, the synthetic shapes set and the VOC converter.

Names are imported on first use, so ``dhanalysis.data.synth`` or ``.voc`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CocoDataset": "coco",
    "BadImage": "coco",
    "build_dataset": "coco",
    "collate_fn": "coco",
    "split_paths": "coco",
    "available_splits": "coco",
    "summarize_coco_json": "coco",
    "size_group": "coco",
    "Compose": "transforms",
    "RandomHorizontalFlip": "transforms",
    "Resize": "transforms",
    "build_transforms": "transforms",
    "make_synth_dataset": "synth",
    "render_synth_image": "synth",
    "SynthParams": "synth",
    "CLASSES": "synth",
    "voc_to_coco": "voc",
    "VOC_CLASSES": "voc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dhanalysis.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dhanalysis.data.{_EXPORTS[name]}"), name)

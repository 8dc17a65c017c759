"""Datasets in the COCO layout: the dataset class, transforms, the synthetic shapes set and the VOC converter.

Names are imported on first use, so ``dhanalysis.data.synth`` or ``.voc`` do not pay for importing torch.
"""

from __future__ import annotations

from dhanalysis.lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _EXPORTS)

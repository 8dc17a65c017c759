"""torchvision's ``fasterrcnn_resnet50_fpn`` (and any state dict of that architecture): the FPN baseline, Single-FC.

Backbone, FPN and RPN keep torchvision's names (ours are built from the same modules); the box head and predictor move
into the ``fc`` branch. Files saved before torchvision 0.13 name the FPN and RPN convs one level up
(``inner_blocks.0.weight``, ``rpn.head.conv.weight``); both spellings are read. A classifier of 91 slots is indexed by
COCO category id: the dataset's labels read the slots of its category ids (`dhanalysis.model.heads.ClassLayout`).
"""

from __future__ import annotations

from dhanalysis.errors import DHError
from dhanalysis.model.convert import Conversion
from dhanalysis.model.convert.common import apply_rules, drop, keep, resnet_depth, shape, state_dict_of, strip_prefix

RULES = [
    keep(r"backbone\.body\.(.+)", r"backbone.body.\1"),
    keep(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d)\.(?:0\.)?(weight|bias)", r"backbone.fpn.\1.\2.0.\3"),
    keep(r"rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)", r"rpn.head.conv.0.0.\1"),
    keep(r"rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)", r"rpn.head.\1.\2"),
    keep(r"roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)", r"roi_heads.branches.fc.head.\1.\2"),
    keep(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", r"roi_heads.branches.fc.predictor.\1.\2"),
    drop(r"rpn\.anchor_generator\..*", "anchors are regenerated from model.rpn"),
]
COCO_SLOTS = 91


def convert(data: dict, path: str, category_ids: tuple[int, ...]) -> Conversion:
    state, dropped = state_dict_of(data, ("model", "state_dict"), path)
    state = strip_prefix(state, "module.")
    slots = shape(state, "roi_heads.box_predictor.cls_score.weight", path)[0]
    fpn = shape(state, "rpn.head.cls_logits.weight", path)[1]
    fc_dim = shape(state, "roi_heads.box_head.fc6.weight", path)[0]
    depth = resnet_depth(state, r"backbone\.body\.layer3\.(\d+)\.conv1\.weight", path)
    settings = {
        "model.variant": "single-fc",
        "model.backbone.name": depth,
        "model.backbone.fpn_channels": fpn,
        "model.head.fc_dim": fc_dim,
    }
    if slots == COCO_SLOTS:
        if any(not 1 <= c < COCO_SLOTS for c in category_ids):
            raise DHError(f"category ids must lie in 1..90 to read torchvision's COCO slots, got {list(category_ids)}")
        settings.update({"model.num_classes": len(category_ids), "model.num_slots": slots,
                         "model.class_slots": [0, *category_ids]})
    else:
        settings["model.num_classes"] = slots - 1
    mapped, more = apply_rules(state, RULES, path)
    return Conversion(settings, mapped, {**dropped, **more})

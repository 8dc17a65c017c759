"""detectron2's FPN Faster R-CNN (``faster_rcnn_R_50_FPN_1x`` and kin): the FPN baseline, Single-FC.

Its MSRA ResNet strides the 1×1 conv and reads BGR in 0-255 less the pixel means; its classifier puts the background
last and its regressor has no background rows; its anchors are not rounded. Model-zoo ``.pkl`` files (numpy arrays)
and ``.pth`` files of one's own training are both read.
"""

from __future__ import annotations

from dhanalysis.model.convert import Conversion
from dhanalysis.model.convert.common import (apply_rules, background_last_settings, drop, keep, resnet_depth, shape,
                                            state_dict_of, strip_prefix)
from dhanalysis.model.convert.resnet_rules import detectron2_resnet

RULES = [
    *detectron2_resnet(),
    keep(r"backbone\.fpn_lateral([2-5])\.(weight|bias)", lambda m: f"backbone.fpn.inner_blocks.{int(m.group(1)) - 2}"
                                                                   f".0.{m.group(2)}"),
    keep(r"backbone\.fpn_output([2-5])\.(weight|bias)", lambda m: f"backbone.fpn.layer_blocks.{int(m.group(1)) - 2}"
                                                                  f".0.{m.group(2)}"),
    keep(r"proposal_generator\.rpn_head\.conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    keep(r"proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)", r"rpn.head.cls_logits.\1"),
    keep(r"proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)", r"rpn.head.bbox_pred.\1"),
    keep(r"roi_heads\.box_head\.fc1\.(weight|bias)", r"roi_heads.branches.fc.head.fc6.\1"),
    keep(r"roi_heads\.box_head\.fc2\.(weight|bias)", r"roi_heads.branches.fc.head.fc7.\1"),
    keep(r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)", r"roi_heads.branches.fc.predictor.\1.\2"),
    drop(r"pixel_(mean|std)", "pixel normalisation, set by model.pixel_mean / model.pixel_std"),
    drop(r"proposal_generator\.anchor_generator\..*", "anchors are regenerated from model.rpn"),
    drop(r"roi_heads\.mask_head\..*", "mask head (boxes only)"),
    drop(r"roi_heads\.keypoint_head\..*", "keypoint head (boxes only)"),
]


def convert(data: dict, path: str, category_ids: tuple[int, ...]) -> Conversion:
    state, dropped = state_dict_of(data, ("model",), path)
    state = strip_prefix(state, "module.")
    slots = shape(state, "roi_heads.box_predictor.cls_score.weight", path)[0]
    reg = shape(state, "roi_heads.box_predictor.bbox_pred.weight", path)[0]
    depth = resnet_depth(state, r"backbone\.bottom_up\.res4\.(\d+)\.conv1\.weight", path)
    settings = {
        "model.variant": "single-fc",
        "model.backbone.name": depth,
        "model.backbone.stride_in_1x1": True,
        "model.backbone.fpn_channels": shape(state, "backbone.fpn_output2.weight", path)[0],
        "model.head.fc_dim": shape(state, "roi_heads.box_head.fc1.weight", path)[0],
        "model.input_format": "bgr255",
        "model.pixel_mean": [103.53, 116.28, 123.675],
        "model.pixel_std": [1.0, 1.0, 1.0],
        "model.rpn.anchor_style": "unrounded",
        "model.rpn.anchor_strides": [4, 8, 16, 32, 64],
        "model.resize_rule": "round",
        "model.resize_kernel": "pil",
        "model.exif_orientation": True,
        "model.box_filter": "detectron2",
        "model.head.aligned": True,
        "model.head.sampling_ratio": 0,
        "model.loss.smooth_l1_beta": 0.0,
        **background_last_settings(slots, reg),
    }
    mapped, more = apply_rules(state, RULES, path)
    return Conversion(settings, mapped, {**dropped, **more})

"""mmdetection's Double-Head (``dh_faster_rcnn_r50_fpn_1x_coco``) and plain FPN Faster R-CNN (``faster-rcnn_r50_fpn``).

Double-Head: the fc-head classifies, the conv-head regresses.
mmdetection's conv-head is a residual block and four bottlenecks (K = 5, no non-local blocks), pooling the RoI
enlarged 1.3× (``reg_roi_scale_factor``); its predictors are ``fc_cls`` on the fc-head and ``fc_reg`` on the
conv-head only, so the model is our ``double-head`` with λ = 1. The classifier puts the background last and the
regressor has no background rows (or 4 rows with ``reg_class_agnostic``). Its "pytorch"-style ResNet and RGB
mean/std input are torchvision's; its anchors are not rounded.

Faster R-CNN's ``Shared2FCBBoxHead`` (``shared_fcs.0/1``, then ``fc_cls`` and ``fc_reg``) is the FPN baseline: our
Single-FC, whose fc-head flattens the pooled (C, 7, 7) features in the same order.

Both: RoIAlign ``aligned=True`` with an adaptive sampling ratio, fixed anchor strides, sizes rounded int(x + 0.5),
dw/dh clamped on both sides, no small-box filters. One difference stays: mmdetection rescales the detections to
the original image before its final NMS, we after it (torchvision's order). IoU is invariant to a common rescale of x
and y, and the resize uses one factor for both axes up to the rounding of the resized size (1067 / 640 against
800 / 480), so the kept set differs only where that sub-pixel difference moves an IoU across the NMS threshold.
"""

from __future__ import annotations

from dhanalysis.errors import DHError
from dhanalysis.model.convert import Conversion
from dhanalysis.model.convert.common import (apply_rules, background_last_settings, drop, keep, resnet_depth, shape,
                                            state_dict_of, strip_prefix)

HEAD = r"roi_head\.bbox_head\."
CONV = "roi_heads.branches.conv.head.blocks."
BN = r"(weight|bias|running_mean|running_var)"
RES_BLOCK = {"conv1": "conv1", "conv2": "conv2", "conv_identity": "shortcut"}

RULES = [
    keep(r"backbone\.(conv1\.weight|bn1\.\w+|layer[1-4]\..+)", r"backbone.body.\1"),
    keep(r"neck\.lateral_convs\.([0-3])\.conv\.(weight|bias)", r"backbone.fpn.inner_blocks.\1.0.\2"),
    keep(r"neck\.fpn_convs\.([0-3])\.conv\.(weight|bias)", r"backbone.fpn.layer_blocks.\1.0.\2"),
    keep(r"rpn_head\.rpn_conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    keep(r"rpn_head\.rpn_cls\.(weight|bias)", r"rpn.head.cls_logits.\1"),
    keep(r"rpn_head\.rpn_reg\.(weight|bias)", r"rpn.head.bbox_pred.\1"),
    keep(HEAD + r"fc_branch\.0\.(weight|bias)", r"roi_heads.branches.fc.head.fc6.\1"),
    keep(HEAD + r"fc_branch\.1\.(weight|bias)", r"roi_heads.branches.fc.head.fc7.\1"),
    keep(HEAD + r"fc_cls\.(weight|bias)", r"roi_heads.branches.fc.predictor.cls_score.\1"),
    keep(HEAD + r"fc_reg\.(weight|bias)", r"roi_heads.branches.conv.predictor.bbox_pred.\1"),
    keep(HEAD + r"res_block\.(conv1|conv2|conv_identity)\.conv\.weight",
         lambda m: f"{CONV}0.{RES_BLOCK[m.group(1)]}.0.weight"),
    keep(HEAD + r"res_block\.(conv1|conv2|conv_identity)\.bn\." + BN,
         lambda m: f"{CONV}0.{RES_BLOCK[m.group(1)]}.1.{m.group(2)}"),
    keep(HEAD + r"conv_branch\.(\d+)\.conv([1-3])\.weight",
         lambda m: f"{CONV}{int(m.group(1)) + 1}.conv{m.group(2)}.0.weight"),
    keep(HEAD + r"conv_branch\.(\d+)\.bn([1-3])\." + BN,
         lambda m: f"{CONV}{int(m.group(1)) + 1}.conv{m.group(2)}.1.{m.group(3)}"),
    drop(r"roi_head\.mask_head\..*", "mask head (boxes only)"),
]
SHARED_2FC = [
    *RULES[:6],
    keep(HEAD + r"shared_fcs\.([01])\.(weight|bias)", lambda m: f"roi_heads.branches.fc.head.fc{6 + int(m.group(1))}."
                                                               f"{m.group(2)}"),
    keep(HEAD + r"fc_(cls|reg)\.(weight|bias)",
         lambda m: f"roi_heads.branches.fc.predictor.{'cls_score' if m.group(1) == 'cls' else 'bbox_pred'}."
                   f"{m.group(2)}"),
    RULES[-1],
]


def convert(data: dict, path: str, category_ids: tuple[int, ...]) -> Conversion:
    state, dropped = state_dict_of(data, ("state_dict",), path)
    state = strip_prefix(state, "module.")
    slots = shape(state, "roi_head.bbox_head.fc_cls.weight", path)[0]
    reg = shape(state, "roi_head.bbox_head.fc_reg.weight", path)[0]
    depth = resnet_depth(state, r"backbone\.layer3\.(\d+)\.conv1\.weight", path)
    common = {
        "model.backbone.name": depth,
        "model.backbone.fpn_channels": shape(state, "neck.fpn_convs.0.conv.weight", path)[0],
        "model.rpn.anchor_style": "unrounded",
        "model.rpn.anchor_strides": [4, 8, 16, 32, 64],
        "model.resize_rule": "round",
        "model.resize_kernel": "opencv",
        "model.box_filter": "nonempty",
        "model.box_clamp": "both",
        "model.head.aligned": True,
        "model.head.sampling_ratio": 0,
        **background_last_settings(slots, reg),
    }
    if any(k.startswith("roi_head.bbox_head.shared_fcs.") for k in state):
        if any(k.startswith(("roi_head.bbox_head.shared_convs.", "roi_head.bbox_head.cls_", "roi_head.bbox_head.reg_"))
               for k in state):
            raise DHError(f"source weights {path}: a ConvFCBBoxHead with convs or separate cls/reg layers has no "
                          "counterpart here; only Shared2FCBBoxHead (shared_fcs.0/1) converts")
        settings = {"model.variant": "single-fc",
                    "model.head.fc_dim": shape(state, "roi_head.bbox_head.shared_fcs.0.weight", path)[0], **common}
        mapped, more = apply_rules(state, SHARED_2FC, path)
        return Conversion(settings, mapped, {**dropped, **more})
    if not any(k.startswith("roi_head.bbox_head.res_block.") for k in state):
        raise DHError(f"source weights {path}: the box head is neither a Double-Head (res_block, conv_branch, "
                      "fc_branch) nor a Shared2FCBBoxHead (shared_fcs); no other mmdetection head converts")
    res = shape(state, "roi_head.bbox_head.res_block.conv2.conv.weight", path)
    bottleneck = shape(state, "roi_head.bbox_head.conv_branch.0.conv1.conv.weight"
                       if "roi_head.bbox_head.conv_branch.0.conv1.conv.weight" in state
                       else "roi_head.bbox_head.conv_branch.0.conv1.weight", path)[0]
    blocks = len({k.split(".")[3] for k in state if k.startswith("roi_head.bbox_head.conv_branch.")})
    settings = {
        "model.variant": "double-head",
        "model.loss.lambda_fc": 1.0,
        "model.loss.lambda_conv": 1.0,
        "model.head.fc_dim": shape(state, "roi_head.bbox_head.fc_branch.0.weight", path)[0],
        "model.head.conv_dim": res[0],
        "model.head.bottleneck_dim": bottleneck,
        "model.head.num_blocks": 1 + blocks,
        "model.head.non_local": False,
        "model.head.conv_roi_scale": 1.3,
        **common,
    }
    mapped, more = apply_rules(state, RULES, path)
    return Conversion(settings, mapped, {**dropped, **more})

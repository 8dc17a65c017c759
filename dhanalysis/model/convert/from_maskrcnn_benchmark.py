"""maskrcnn-benchmark files: the authors' Double-Head-Ext releases, or a plain FPN model (Single-FC).

The authors' box head (``FPN2MLPFeatureExtractorNeighbor`` + ``FPNPredictorNeighbor``) has an fc-head (``fc6``,
``fc7``) and a conv-head: a residual block (``nonlocal_conv``: ``bottom`` 3×3 → 1×1 plus ``top`` 1×1 projection)
then stacks of (non-local block, bottleneck ``ffconv``) — our conv-head with non-local blocks, K = 1 + 2·stacks —
pooling the RoI enlarged 1.3×; four predictors (``cls_score``/``bbox_pred`` on the conv-head, ``*_fc`` on the
fc-head), so every inference mode of Double-Head-Ext works. Grouped non-local blocks use 4 groups and the dot
product divided by the number of positions (their released settings; the group count is not in the weights).
MSRA ResNet (stride in the 1×1 conv), BGR 0-255 input less Detectron's pixel means, Detectron's anchors.
"""

from __future__ import annotations

from dhanalysis.errors import DHError
from dhanalysis.model.convert import Conversion
from dhanalysis.model.convert.common import apply_rules, drop, keep, resnet_depth, shape, state_dict_of, strip_prefix
from dhanalysis.model.convert.resnet_rules import maskrcnn_benchmark_resnet

FROZEN_BN_EPS = 1e-5  # torchvision's FrozenBatchNorm2d epsilon, absent from maskrcnn-benchmark's
BOX = r"roi_heads\.box\."
EXT = BOX + r"feature_extractor\."
CONV = "roi_heads.branches.conv.head.blocks."
BN = r"(weight|bias|running_mean|running_var)"
RESIDUAL = {"top.0": "shortcut.0", "top.1": "shortcut.1", "bottom.0": "conv1.0", "bottom.1": "conv1.1",
            "bottom.3": "conv2.0", "bottom.4": "conv2.1"}
FFCONV = {"0": "conv1.0", "1": "conv1.1", "3": "conv2.0", "4": "conv2.1", "6": "conv3.0", "7": "conv3.1"}

COMMON = [
    *maskrcnn_benchmark_resnet(FROZEN_BN_EPS),
    keep(r"backbone\.fpn\.fpn_inner([1-4])\.(weight|bias)",
         lambda m: f"backbone.fpn.inner_blocks.{int(m.group(1)) - 1}.0.{m.group(2)}"),
    keep(r"backbone\.fpn\.fpn_layer([1-4])\.(weight|bias)",
         lambda m: f"backbone.fpn.layer_blocks.{int(m.group(1)) - 1}.0.{m.group(2)}"),
    keep(r"rpn\.head\.conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    keep(r"rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)", r"rpn.head.\1.\2"),
    keep(EXT + r"(fc6|fc7)\.(weight|bias)", r"roi_heads.branches.fc.head.\1.\2"),
    drop(r"rpn\.anchor_generator\.cell_anchors\.\d", "anchors are regenerated from model.rpn (anchor_style=legacy)"),
    drop(r"roi_heads\.mask\..*", "mask head (boxes only)"),
]
SINGLE_FC = [
    *COMMON,
    keep(BOX + r"predictor\.(cls_score|bbox_pred)\.(weight|bias)", r"roi_heads.branches.fc.predictor.\1.\2"),
]
DOUBLE_HEAD_EXT = [
    *COMMON,
    keep(EXT + r"nonlocal_conv\.((?:top|bottom)\.\d)\.weight", lambda m: f"{CONV}0.{RESIDUAL[m.group(1)]}.weight"),
    keep(EXT + r"nonlocal_conv\.((?:top|bottom)\.\d)\." + BN,
         lambda m: f"{CONV}0.{RESIDUAL[m.group(1)]}.{m.group(2)}"),
    keep(EXT + r"shared_nonlocal\.(\d+)\.(g|theta|phi)\.(weight|bias)",
         lambda m: f"{CONV}{1 + 2 * int(m.group(1))}.{m.group(2)}.{m.group(3)}"),
    keep(EXT + r"shared_nonlocal\.(\d+)\.W\.0\.(weight|bias)", lambda m: f"{CONV}{1 + 2 * int(m.group(1))}.out.0."
                                                                       f"{m.group(2)}"),
    keep(EXT + r"shared_nonlocal\.(\d+)\.W\.bn\." + BN, lambda m: f"{CONV}{1 + 2 * int(m.group(1))}.out.1."
                                                                f"{m.group(2)}"),
    keep(EXT + r"shared_nonlocal\.(\d+)\.ffconv\.bottleneck\.([013467])\.(weight|bias|running_mean|running_var)",
         lambda m: f"{CONV}{2 + 2 * int(m.group(1))}.{FFCONV[m.group(2)]}.{m.group(3)}"),
    keep(BOX + r"predictor\.(cls_score|bbox_pred)\.(weight|bias)", r"roi_heads.branches.conv.predictor.\1.\2"),
    keep(BOX + r"predictor\.(cls_score|bbox_pred)_fc\.(weight|bias)", r"roi_heads.branches.fc.predictor.\1.\2"),
]


def agnostic_foreground(t):
    """maskrcnn-benchmark's class-agnostic regressor has background and foreground rows (8); the foreground's are
    the box of every class."""
    return t[-4:]


def convert(data: dict, path: str, category_ids: tuple[int, ...]) -> Conversion:
    state, dropped = state_dict_of(data, ("model",), path)
    state = strip_prefix(state, "module.")
    ext = any(".nonlocal_conv." in k for k in state)
    if any(".cls_nonlocal." in k or ".reg_nonlocal." in k for k in state):
        raise DHError(f"source weights {path}: separate classification/regression non-local stacks have no "
                      "counterpart in one conv-head; only the released layout (shared stacks) converts")
    cls_key = "roi_heads.box.predictor.cls_score.weight"
    slots = shape(state, cls_key, path)[0]
    reg = shape(state, "roi_heads.box.predictor.bbox_pred.weight", path)[0]
    depth = resnet_depth(state, r"backbone\.body\.layer3\.(\d+)\.conv1\.weight", path)
    settings = {
        "model.backbone.name": depth,
        "model.backbone.stride_in_1x1": True,
        "model.backbone.fpn_channels": shape(state, "backbone.fpn.fpn_layer1.weight", path)[0],
        "model.head.fc_dim": shape(state, "roi_heads.box.feature_extractor.fc6.weight", path)[0],
        "model.input_format": "bgr255",
        "model.pixel_mean": [102.9801, 115.9465, 122.7717],
        "model.pixel_std": [1.0, 1.0, 1.0],
        "model.rpn.anchor_style": "legacy",
        "model.rpn.anchor_strides": [4, 8, 16, 32, 64],
        "model.resize_rule": "maskrcnn_benchmark",
        "model.resize_kernel": "pil",
        "model.box_convention": "plus_one",
        "model.box_filter": "none",
        "model.num_classes": slots - 1,
        "model.reg_layout": "agnostic" if reg == 8 else "per_slot",
    }
    rules = list(SINGLE_FC)
    extractor = "roi_heads.box.feature_extractor."
    if ext:
        stacks = len({k.split(".")[4] for k in state if ".feature_extractor.shared_nonlocal." in k})
        settings.update({
            "model.variant": "double-head-ext",
            "model.loss.lambda_fc": 0.7,
            "model.loss.lambda_conv": 0.8,
            "model.head.non_local": True,
            "model.head.non_local_mode": "dot",
            "model.head.non_local_groups": 4,
            "model.head.num_blocks": 1 + 2 * stacks,
            "model.head.conv_dim": shape(state, extractor + "nonlocal_conv.top.0.weight", path)[0],
            "model.head.non_local_dim": shape(state, extractor + "shared_nonlocal.0.g.weight", path)[0]
            if stacks else 512,
            "model.head.conv_roi_scale": 1.3,
        })
        if stacks:
            ff = shape(state, extractor + "shared_nonlocal.0.ffconv.bottleneck.0.weight", path)
            settings["model.head.bottleneck_dim"] = ff[0]
        rules = list(DOUBLE_HEAD_EXT)
    else:
        settings["model.variant"] = "single-fc"
    if reg == 8:
        rules = [keep(BOX + r"predictor\.(bbox_pred)(_fc)?\.(weight|bias)",
                      lambda m: f"roi_heads.branches.{'fc' if m.group(2) or not ext else 'conv'}.predictor.bbox_pred."
                                f"{m.group(3)}", agnostic_foreground), *rules]
    mapped, more = apply_rules(state, rules, path)
    return Conversion(settings, mapped, {**dropped, **more})

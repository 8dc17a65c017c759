"""Build an FPN Faster R-CNN with any of the paper's head variants from a `Config`.

Everything but the RoI heads is torchvision's: ResNet-FPN backbone (`BackboneWithFPN`), anchor generator, RPN and the
resize/normalise transform. The model keeps torchvision's detection API: ``model(images, targets)`` returns a loss
dict in training, ``model(images)`` a list of ``{boxes, labels, scores}`` in evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import misc as misc_ops

from dhanalysis.config import BackboneConfig, Config, HeadConfig
from dhanalysis.errors import DHError
from dhanalysis.model.conv_layout import apply_conv_rules
from dhanalysis.model.conventions import (BOX_CLAMPS, BOX_CONVENTIONS, BOX_FILTERS, RESIZE_KERNELS, RESIZE_RULES,
                                          ConventionBoxCoder, ConventionRPN, from_convention, resize_8bit,
                                          resized_size)
from dhanalysis.model.heads import REG_LAYOUTS, Branch, ClassLayout, ConvHead, FCHead, Predictor
from dhanalysis.model.roi_heads import DoubleHeadRoIHeads, LevelPooler
from dhanalysis.model.variants import branch_loss_weights, check_mode, default_mode, get_variant
from dhanalysis.vocab import HEAD_TYPES

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
FEATMAP_NAMES = ["0", "1", "2", "3"]
INPUT_FORMATS = ("rgb", "bgr255")
ANCHOR_STYLES = ("torchvision", "unrounded", "legacy")


def build_backbone(cfg: BackboneConfig, pretrained: bool = True) -> BackboneWithFPN:
    """ResNet + FPN (P2-P6). ``cfg.weights`` is a local state-dict file for the ResNet; nothing is downloaded.

    ``pretrained=False`` leaves the ResNet at its random initialisation whatever ``cfg.weights`` names: for a model
    whose every weight is about to be replaced (a checkpoint, converted weights), the file need not exist.
    """
    if cfg.name not in BACKBONES:
        raise DHError(f"unknown backbone '{cfg.name}'; choose one of: {', '.join(BACKBONES)}")
    if cfg.norm not in ("frozen_bn", "bn"):
        raise DHError(f"model.backbone.norm must be 'frozen_bn' or 'bn', got '{cfg.norm}'")
    if not 0 <= cfg.trainable_layers <= 5:
        raise DHError(f"model.backbone.trainable_layers must be in 0..5, got {cfg.trainable_layers}")
    norm_layer = misc_ops.FrozenBatchNorm2d if cfg.norm == "frozen_bn" else nn.BatchNorm2d
    body = getattr(resnet, cfg.name)(weights=None, norm_layer=norm_layer)
    if cfg.stride_in_1x1:
        move_stride_to_1x1(body)
    if cfg.weights and pretrained:
        load_backbone_weights(body, cfg.weights)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: cfg.trainable_layers]
    if cfg.trainable_layers == 5:
        trainable.append("bn1")
    for name, param in body.named_parameters():
        if not any(name.startswith(layer) for layer in trainable):
            param.requires_grad_(False)
    stage2 = body.inplanes // 8  # 64 for BasicBlock ResNets, 256 for Bottleneck ones
    in_channels = [stage2 * 2**i for i in range(4)]
    return_layers = {f"layer{i + 1}": name for i, name in enumerate(FEATMAP_NAMES)}
    return BackboneWithFPN(body, return_layers, in_channels, cfg.fpn_channels)


def move_stride_to_1x1(body: resnet.ResNet) -> None:
    """Put the stride of each stage's first bottleneck on its 1×1 conv, as MSRA/Caffe2 ResNets do (the weights of
    detectron2's and maskrcnn-benchmark's R-50/101 were trained so); torchvision strides the 3×3 conv."""
    if not isinstance(body.layer1[0], resnet.Bottleneck):
        raise DHError("model.backbone.stride_in_1x1 needs a bottleneck ResNet (resnet50 or resnet101)")
    for stage in (body.layer2, body.layer3, body.layer4):
        block = stage[0]
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def load_backbone_weights(body: nn.Module, path: str) -> None:
    """Load ImageNet (or other) ResNet weights from a local file, ignoring the classifier ``fc.*``."""
    p = Path(path)
    if not p.is_file():
        raise DHError(f"backbone weights {p} not found; make them with 'dhanalysis pretrain --out {p}', give another "
                      "local ResNet state dict with --set model.backbone.weights=PATH, or null to start from scratch")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is the file's fault
        raise DHError(f"backbone weights {p} could not be read safely ({type(exc).__name__}); is it a state dict?")
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise DHError(f"backbone weights {p} do not match the ResNet: missing {missing[:3]}, unexpected {unexpected[:3]}")


def build_head(head_type: str, cfg: HeadConfig, in_channels: int) -> FCHead | ConvHead:
    """The head of one branch from the config: an fc-head or a conv-head (§4.1); any other type is a `DHError`."""
    if head_type not in HEAD_TYPES:
        raise DHError(f"unknown head type '{head_type}'; choose one of: {', '.join(HEAD_TYPES)}")
    if head_type == "fc":
        return FCHead(in_channels, cfg.roi_size, cfg.fc_dim)
    return ConvHead(
        in_channels,
        cfg.conv_dim,
        cfg.bottleneck_dim,
        cfg.num_blocks,
        cfg.non_local,
        cfg.non_local_dim,
        cfg.non_local_groups,
        cfg.non_local_mode,
    )


class InputTransform(GeneralizedRCNNTransform):
    """torchvision's resize/normalise transform that can feed BGR images in 0-255 (``input_format="bgr255"``) and
    resize by another framework's rule (``resize_rule``, `dhanalysis.model.conventions.RESIZE_RULES`).

    Images always arrive as RGB in 0-1 (the datasets' and torchvision's convention); weights trained on BGR 0-255
    input (Detectron, maskrcnn-benchmark, detectron2's MSRA models) get it converted here, before the pixel means.
    torchvision normalises, then resizes the float image; the other rules resize the 8-bit image first, as their
    frameworks do: the image is resized to that rule's size, rounded to whole 8-bit levels, then normalised.
    """

    def __init__(self, min_size: int, max_size: int, mean: list[float], std: list[float], input_format: str = "rgb",
                 resize_rule: str = "torchvision", box_convention: str = "continuous", resize_kernel: str = "float"):
        super().__init__(min_size, max_size, mean, std)
        self.input_format = input_format
        self.resize_rule = resize_rule
        self.resize_kernel = resize_kernel
        self.box_convention = box_convention

    def postprocess(self, result: list[dict], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict]:
        """torchvision's rescaling to the original image, then the boxes in the continuous frame (`from_convention`:
        a ``plus_one`` model's box gains its last pixel, as maskrcnn-benchmark's export widths do)."""
        result = super().postprocess(result, image_shapes, original_image_sizes)
        for r in result:
            if "boxes" in r:
                r["boxes"] = from_convention(r["boxes"], self.box_convention)
        return result

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        if self.resize_rule != "torchvision":
            return image  # normalised in `resize`, after the 8-bit resize
        return self.to_network_input(image)

    def to_network_input(self, image: torch.Tensor) -> torch.Tensor:
        if self.input_format == "bgr255":
            image = image.flip(0) * 255.0
        return super().normalize(image)

    def resize(self, image: torch.Tensor, target: dict | None = None) -> tuple[torch.Tensor, dict | None]:
        if self.resize_rule == "torchvision":
            return super().resize(image, target)
        if self.training and self._skip_resize:
            return self.to_network_input(image), target
        h, w = image.shape[-2:]
        size = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        out = resized_size(h, w, size, self.max_size, self.resize_rule)
        image = resize_8bit(image * 255.0, out, self.resize_kernel) / 255.0  # the 8-bit image the source resizes
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), out)
        return self.to_network_input(image), target


class SourceAnchorGenerator(AnchorGenerator):
    """torchvision's anchor generator with the cell anchors of another framework (``model.rpn.anchor_style``).

    ``"torchvision"`` rounds each cell anchor to whole pixels; ``"unrounded"`` keeps w = s/√r, h = s·√r exactly
    (detectron2, mmdetection 2+); ``"legacy"`` is Detectron's rule that maskrcnn-benchmark keeps: a stride × stride
    box centred at (stride − 1)/2, its width and height rounded per aspect ratio, then scaled to the size, in the
    "+1" pixel convention. Strides are 4, 8, 16, ... from P2.

    ``strides`` (``model.rpn.anchor_strides``): the fixed stride of each level's grid (detectron2, mmdetection,
    maskrcnn-benchmark: 4 … 64); empty keeps torchvision's rule, padded image size // grid size, which differs where
    a side is not a multiple of the level's stride (a padded 800-px side has a 13-cell P6 of stride 61, not 64).
    """

    def __init__(self, sizes: tuple[tuple[int, ...], ...], aspect_ratios: tuple[tuple[float, ...], ...],
                 style: str = "torchvision", strides: tuple[int, ...] = ()):
        super().__init__(sizes, aspect_ratios)
        self.style = style
        self.fixed_strides = tuple(strides)
        if style == "unrounded":
            self.cell_anchors = [unrounded_cell_anchors(s, r) for s, r in zip(sizes, aspect_ratios)]
        elif style == "legacy":
            self.cell_anchors = [legacy_cell_anchors(2 ** (level + 2), s, r)
                                 for level, (s, r) in enumerate(zip(sizes, aspect_ratios))]

    def grid_anchors(self, grid_sizes: list[list[int]], strides: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        if self.fixed_strides:
            device = strides[0][0].device
            strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.fixed_strides]
        return super().grid_anchors(grid_sizes, strides)


def unrounded_cell_anchors(sizes: tuple[int, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """``(len(ratios)·len(sizes), 4)`` xyxy anchors about (0, 0), ratio-major like torchvision's; h / w = ratio."""
    out = []
    for ratio in ratios:
        for size in sizes:
            w = size / ratio**0.5
            h = w * ratio
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(out, dtype=torch.float32)


def legacy_cell_anchors(stride: int, sizes: tuple[int, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """Detectron's cell anchors of one level (see `SourceAnchorGenerator`), ``(len(ratios)·len(sizes), 4)``."""
    centre = (stride - 1) / 2
    out = []
    for ratio in ratios:
        w = round((stride * stride / ratio) ** 0.5)  # Python's round: half to even, as numpy's
        h = round(w * ratio)
        for size in sizes:
            ws, hs = w * size / stride, h * size / stride
            out.append([centre - (ws - 1) / 2, centre - (hs - 1) / 2, centre + (ws - 1) / 2, centre + (hs - 1) / 2])
    return torch.tensor(out, dtype=torch.float32)


def check_model_options(m) -> None:
    """One-line errors for the options converted models use (input format, anchors, class layout)."""
    if m.input_format not in INPUT_FORMATS:
        raise DHError(f"model.input_format must be one of {', '.join(INPUT_FORMATS)}, got '{m.input_format}'")
    if len(m.pixel_mean) != 3 or len(m.pixel_std) != 3 or any(v <= 0 for v in m.pixel_std):
        raise DHError("model.pixel_mean and model.pixel_std need 3 values each (pixel_std > 0)")
    if m.rpn.anchor_style not in ANCHOR_STYLES:
        raise DHError(f"model.rpn.anchor_style must be one of {', '.join(ANCHOR_STYLES)}, got '{m.rpn.anchor_style}'")
    if m.rpn.anchor_strides and (len(m.rpn.anchor_strides) != len(m.rpn.anchor_sizes)
                                 or any(s <= 0 for s in m.rpn.anchor_strides)):
        raise DHError(f"model.rpn.anchor_strides needs one positive stride per anchor size "
                      f"({len(m.rpn.anchor_sizes)}), got {list(m.rpn.anchor_strides)}; [] keeps torchvision's rule")
    for key, value, choices in (("box_convention", m.box_convention, BOX_CONVENTIONS),
                                ("box_filter", m.box_filter, tuple(BOX_FILTERS)),
                                ("box_clamp", m.box_clamp, BOX_CLAMPS), ("resize_rule", m.resize_rule, RESIZE_RULES),
                                ("resize_kernel", m.resize_kernel, RESIZE_KERNELS)):
        if value not in choices:
            raise DHError(f"model.{key} must be one of {', '.join(choices)}, got '{value}'")
    if m.reg_layout not in REG_LAYOUTS:
        raise DHError(f"model.reg_layout must be one of {', '.join(REG_LAYOUTS)}, got '{m.reg_layout}'")
    conv_memory_format(m.conv_memory_format)


def class_layout(m, classes: int) -> ClassLayout:
    """The predictors' `ClassLayout` from ``model.num_slots`` / ``class_slots`` / ``reg_layout``."""
    try:
        return ClassLayout(classes + 1, m.num_slots, tuple(m.class_slots), m.reg_layout)
    except ValueError as exc:
        raise DHError(f"model.class_slots / model.num_slots do not fit {classes} classes: {exc}") from None


class DoubleHeadRCNN(GeneralizedRCNN):
    """Faster R-CNN with FPN and the branches of one variant. ``self.config`` is the `Config` it was built from."""

    def __init__(self, config: Config, backbone, rpn, roi_heads: DoubleHeadRoIHeads, transform):
        super().__init__(backbone, rpn, roi_heads, transform)
        self.config = config

    @property
    def mode(self) -> str:
        return self.roi_heads.mode

    def set_mode(self, mode: str) -> None:
        """Switch the inference mode (no retraining); a mode needing an untrained branch is a `DHError`."""
        check_mode(self.config.model.variant, self.config.model.loss, mode)
        self.roi_heads.mode = mode

    def features(self, images: list[torch.Tensor], targets=None):
        """Run the transform and backbone once: (ImageList, FPN features dict, resized targets)."""
        images, targets = self.transform(images, targets)
        return images, self.backbone(images.tensors), targets

    @torch.no_grad()
    def predict_modes(self, images: list[torch.Tensor], modes: list[str],
                      suppress: bool = True) -> dict[str, list[dict[str, torch.Tensor]]]:
        """Detections of several inference modes from one pass of backbone, RPN and heads (Table 3, Fig. 8); each
        detection also carries every classifying head's score of its class (``fc_score``, ``conv_score``).
        ``suppress=False``: before the per-class NMS and the per-image top-k (`DoubleHeadRoIHeads.detect`)."""
        return self.detect_modes(self.trunk_pass(images), modes, suppress)

    @torch.no_grad()
    def trunk_pass(self, images: list[torch.Tensor]) -> TrunkPass:
        """Transform, backbone + FPN and RPN of a batch: what every set of RoI heads on this trunk detects from."""
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, feats, _ = self.features(images)
        proposals, _ = self.rpn(image_list, feats)
        return TrunkPass(image_list.image_sizes, feats, proposals, original_sizes)

    @torch.no_grad()
    def detect_modes(self, trunk: TrunkPass, modes: list[str],
                     suppress: bool = True) -> dict[str, list[dict[str, torch.Tensor]]]:
        """This model's RoI heads on a `trunk_pass` (its own, or that of a model sharing its trunk): detections per
        mode, in the input images' coordinates; ``suppress=False``: before NMS and top-k."""
        for mode in modes:
            check_mode(self.config.model.variant, self.config.model.loss, mode)
        by_mode = self.roi_heads.detect(trunk.features, trunk.proposals, trunk.image_sizes, modes,
                                        with_head_scores=True, suppress=suppress)
        return {m: self.transform.postprocess(d, trunk.image_sizes, trunk.original_sizes) for m, d in by_mode.items()}


class TrunkPass(NamedTuple):
    """One batch through transform, backbone + FPN and RPN (`DoubleHeadRCNN.trunk_pass`)."""

    image_sizes: list[tuple[int, int]]
    features: dict[str, torch.Tensor]
    proposals: list[torch.Tensor]
    original_sizes: list[tuple[int, int]]


def build_model(config: Config, num_classes: int | None = None, pretrained: bool = True,
                heads: Mapping[str, nn.Module] | None = None) -> DoubleHeadRCNN:
    """The model of ``config``; ``num_classes`` (foreground) overrides ``config.model.num_classes`` when that is 0.

    ``heads``: branch name -> a head module of the user's own to use instead of the one the config builds, as
    torchvision's ``FasterRCNN(box_head=...)`` allows; it maps pooled RoIs ``(N, C, S, S)`` to ``(N, out_dim)``
    features and says its width in ``out_dim``. Branches not named are built from the config. (A checkpoint of such
    a model stores the config only, so it reloads with the config's heads.)

    ``pretrained=False`` skips reading ``model.backbone.weights`` (see `build_backbone`): a checkpoint's own state
    replaces it, so a checkpoint loads on a machine that never had its pretraining file. The stored config keeps the
    path, which says what the model was trained from.
    """
    m = config.model
    config, classes = resolve_num_classes(config, num_classes)
    variant = get_variant(m.variant)
    check_model_options(m)
    layout = class_layout(m, classes)
    # built in this order (backbone, RPN, branches) so a seeded build draws its initial weights as it always has
    backbone = build_backbone(m.backbone, pretrained)
    channels = m.backbone.fpn_channels
    rpn = build_rpn(m, channels)
    branches, weights = build_branches(m, variant, heads, channels, classes, layout)
    mode = m.mode or default_mode(m.variant, m.loss)
    check_mode(m.variant, m.loss, mode)
    roi_heads = build_roi_heads(m, branches, weights, mode)
    transform = InputTransform(m.min_size, m.max_size, list(m.pixel_mean), list(m.pixel_std), m.input_format,
                               m.resize_rule, m.box_convention, m.resize_kernel)
    model = DoubleHeadRCNN(config, backbone, rpn, roi_heads, transform)
    if m.conv_memory_format == "contiguous":
        evaluate_conv_heads_in_modules(model)
    memory_format = conv_memory_format(m.conv_memory_format)
    if memory_format == torch.channels_last:
        apply_conv_rules(model)
    return model.to(memory_format=memory_format)


def resolve_num_classes(config: Config, num_classes: int | None) -> tuple[Config, int]:
    """``(config, classes)``: the foreground class count from the config, else from the dataset's ``num_classes``,
    written into the returned config so a checkpoint rebuilds the same predictors; a missing or contradicting count
    is a `DHError` before anything is built."""
    m = config.model
    classes = m.num_classes or num_classes
    if not classes:
        raise DHError("the number of classes is unknown: set model.num_classes or build the model from a dataset")
    if m.num_classes and num_classes and m.num_classes != num_classes:
        raise DHError(f"config says model.num_classes={m.num_classes} but the dataset has {num_classes} classes")
    if not m.num_classes:
        config = replace(config, model=replace(m, num_classes=classes))
    return config, classes


def build_rpn(m, channels: int) -> ConventionRPN:
    """torchvision's RPN on ``m.rpn``'s anchors, in the config's box convention (its 0.7 / 0.3 matching thresholds
    are the paper's and fixed), with the unit-weight box coder RPNs use."""
    anchor_sizes = tuple((s,) for s in m.rpn.anchor_sizes)
    anchors = SourceAnchorGenerator(anchor_sizes, (tuple(m.rpn.aspect_ratios),) * len(anchor_sizes),
                                    m.rpn.anchor_style, m.rpn.anchor_strides)
    rpn = ConventionRPN(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=m.rpn.batch_size_per_image,
        positive_fraction=m.rpn.positive_fraction,
        pre_nms_top_n={"training": m.rpn.pre_nms_top_n_train, "testing": m.rpn.pre_nms_top_n_test},
        post_nms_top_n={"training": m.rpn.post_nms_top_n_train, "testing": m.rpn.post_nms_top_n_test},
        nms_thresh=m.rpn.nms_thresh,
        box_convention=m.box_convention,
        box_filter=m.box_filter,
    )
    rpn.box_coder = ConventionBoxCoder((1.0, 1.0, 1.0, 1.0), m.box_convention, m.box_clamp)
    return rpn


def build_branches(m, variant, heads: Mapping[str, nn.Module] | None, channels: int, classes: int,
                   layout: ClassLayout) -> tuple[dict[str, Branch], dict[str, dict[str, float]]]:
    """``(branches, loss weights)`` of the variant's branches that have a loss: each a head (the user's from
    ``heads`` or the config's) with a predictor of the tasks it is trained for. A branch with no loss is left out,
    as it would never train (e.g. ``loss.w_conv = 0``)."""
    heads = dict(heads or {})
    unknown = sorted(set(heads) - {spec.name for spec in variant.branches})
    if unknown:
        raise DHError(f"heads: variant '{m.variant}' has no branch {', '.join(unknown)}; its branches are "
                      f"{', '.join(spec.name for spec in variant.branches)}")
    branches, weights = {}, {}
    for spec in variant.branches:
        w = branch_loss_weights(spec, m.loss)
        if w["cls"] <= 0 and w["reg"] <= 0:
            continue
        weights[spec.name] = w
        head = heads[spec.name] if spec.name in heads else build_head(spec.head, m.head, channels)
        if not isinstance(getattr(head, "out_dim", None), int):
            raise DHError(f"heads['{spec.name}'] has no integer out_dim; set it to the width of the head's output")
        predictor = Predictor(head.out_dim, classes + 1, cls=w["cls"] > 0, reg=w["reg"] > 0, layout=layout)
        branches[spec.name] = Branch(spec.head, head, predictor)
    return branches, weights


def build_roi_heads(m, branches: dict[str, Branch], weights: dict[str, dict[str, float]],
                    mode: str) -> DoubleHeadRoIHeads:
    """The RoI heads around ``branches``: one level pooler for all of them, the config's sampling, thresholds and
    box convention, and the (10, 10, 5, 5)-weighted box coder of Faster R-CNN's second stage."""
    roi_heads = DoubleHeadRoIHeads(
        branches,
        weights,
        LevelPooler(FEATMAP_NAMES, m.head.roi_size, m.head.sampling_ratio, m.head.aligned, m.box_convention),
        mode,
        conv_roi_scale=m.head.conv_roi_scale,
        smooth_l1_beta=m.loss.smooth_l1_beta,
        batch_size_per_image=m.box_batch_size_per_image,
        positive_fraction=m.box_positive_fraction,
        score_thresh=m.score_thresh,
        nms_thresh=m.nms_thresh,
        detections_per_img=m.detections_per_img,
        box_convention=m.box_convention,
        box_filter=m.box_filter,
    )
    roi_heads.box_coder = ConventionBoxCoder((10.0, 10.0, 5.0, 5.0), m.box_convention, m.box_clamp)
    return roi_heads


def evaluate_conv_heads_in_modules(model: nn.Module) -> None:
    """Make every conv-head evaluate through its NCHW modules: the arithmetic of the library a contiguous-format
    model is converted from, which ``model.conv_memory_format = "contiguous"`` asks for."""
    for module in model.modules():
        if isinstance(module, ConvHead):
            module.__dict__["_eval_in_modules"] = True


CONV_MEMORY_FORMATS = ("auto", "contiguous")  # model.conv_memory_format


def conv_memory_format(option: str = "auto") -> torch.memory_format:
    """The memory format of the model's conv weights, hence of every feature map, for ``model.conv_memory_format``:
    ``"contiguous"`` is the default NCHW layout, the arithmetic of the libraries checkpoints are converted from;
    ``"auto"`` is channels-last where a convolution library with channels-last kernels is installed (oneDNN on CPU,
    cuDNN on CUDA), else the default.

    Why "contiguous" exists: oneDNN's channels-last kernels accumulate in another order than its NCHW ones, and on
    an AVX2-only CPU an uncalibrated ResNet-50's large activations carry that rounding into boxes (885 of 898
    detections of a converted torchvision model within 0.01 px, against 898 of 898 in NCHW); a user who checks a
    conversion against its source needs the source's arithmetic.

    Measured on the mmdetection-sized Double-Head model (BENCHMARKS.md): the ResNet-50-FPN of one 800 × 1088 image
    0.70-0.77 → 0.58-0.63 s and a 2 × 512² training step ~10% faster on CPU; cuDNN's tensor cores want NHWC under
    AMP. The maps reach RoIAlign's feature table already in its row order. A rule from what is installed, as
    `detected_training_form`, so every process of a run computes the same arithmetic. State-dict values and keys are
    unchanged: checkpoints load either way. One exception, by the same kind of rule (`conv_layout`): on an AVX2-only
    CPU a 3×3 convolution that trains over a large map computes in NCHW.
    """
    if option not in CONV_MEMORY_FORMATS:
        raise DHError(f"model.conv_memory_format must be one of {', '.join(CONV_MEMORY_FORMATS)}, got '{option}'")
    if option == "auto" and (torch.backends.mkldnn.is_available() or torch.backends.cudnn.is_available()):
        return torch.channels_last
    return torch.contiguous_format

"""The box conventions of the source frameworks, each in one place: what a box's size means, how boxes are clipped,
suppressed, filtered, enlarged and decoded (``model.box_convention``, ``model.box_filter``, ``model.box_clamp``).

torchvision, detectron2 and mmdetection treat a box as a continuous region: width = x2 − x1, clipped to [0, W].
maskrcnn-benchmark, and the authors' Double-Head code built on it, keep Detectron's pixel-index convention
(``"plus_one"``): x2 is the last pixel column *inside* the box, so width = x2 − x1 + 1 everywhere a size is read — the
box coder (decoding ends at centre + w/2 − 1), clipping to [0, W − 1], NMS areas and overlaps, the FPN level of a box,
the conv-head's enlarged RoI. Every one of those reads `extent` here, so the convention is one setting and not +1s
spread through the code. Outside the model boxes are continuous: `from_convention` turns the model's detections,
proposals and regressed boxes into COCO's frame (x2 + 1, so the COCO export is [x, y, w + 1, h + 1] as the source
writes it) and `to_convention` the boxes an analysis gives it; both sit at the model's boundary only.

Small boxes (`BOX_FILTERS`): torchvision drops RPN proposals under 1e-3 px and detections under 1e-2 px (before NMS);
detectron2 and mmdetection keep every proposal wider and taller than 0; mmdetection keeps every detection, while
detectron2's last inference step (``detector_postprocess``, after NMS and the top-k cut) drops the detections whose
clipped box is empty (width or height 0: a box regressed off the image and clipped to its border);
maskrcnn-benchmark keeps all (a clipped box there is at least 1 px). detectron2 clips and filters again after scaling
the boxes to the original image; here the rule reads the boxes clipped to the network's input, which differs only for
a box within float rounding of the border.

``box_clamp``: the decoded log-size change dw, dh is capped at log(1000 / 16) from above (torchvision, detectron2,
maskrcnn-benchmark) or on both sides (``"both"``, mmdetection's delta coder).

``resize_rule`` (`RESIZE_RULES`): the size a test image is resized to and what is resized. torchvision floors each
side (640×480 → 1066×800) and interpolates the normalised float image; detectron2 and mmdetection round each side,
int(x + 0.5) (→ 1067×800); maskrcnn-benchmark fixes the short side (rounded when the long side caps it) and floors the
long one. The three sources resize the 8-bit image (PIL, OpenCV), so their resized pixels are whole levels again.

``resize_kernel`` (`RESIZE_KERNELS`): how those 8-bit pixels are interpolated. ``"float"`` interpolates bilinearly in
float and rounds to the nearest level; ``"opencv"`` is OpenCV's ``INTER_LINEAR`` on 8-bit images (mmdetection's
``mmcv.imresize``), whose fixed-point arithmetic lands a level off the float result on about one pixel in ten: taps
weighted in 1/2048ths (the float32 weights rounded), the column pass exact, the row pass's products rounded down twice
before the final rounding. A random network amplifies one level into different detections; this reproduces OpenCV's
pixels exactly (test). ``"pil"`` is Pillow's ``BILINEAR`` resize (detectron2's and maskrcnn-benchmark's): a triangle
filter widened by the scale when shrinking (so it antialiases), weights normalised per output pixel and rounded to
2^-22, the horizontal pass first and rounded to 8 bits before the vertical one; reproduced exactly too (test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import boxes as box_ops

from dhanalysis.vocab import resize_scale

BOX_CONVENTIONS = ("continuous", "plus_one")
BOX_CLAMPS = ("max", "both")
DELTA_CLIP = math.log(1000.0 / 16)  # the cap of dw, dh in every library


@dataclass(frozen=True)
class SizeRule:
    """Keep boxes whose width and height are ``>= size`` (``strict=False``) or ``> size`` (``strict``); None: all."""

    size: float | None
    strict: bool = False


NONEMPTY = SizeRule(0.0, strict=True)  # width > 0 and height > 0


@dataclass(frozen=True)
class BoxFilter:
    proposals: SizeRule  # RPN proposals after clipping
    detections: SizeRule  # the box head's detections after clipping and the score threshold, before NMS
    final: SizeRule = SizeRule(None)  # the detections NMS and the top-k cut leave: a slot taken is not refilled


BOX_FILTERS = {
    "torchvision": BoxFilter(SizeRule(1e-3), SizeRule(1e-2)),
    "detectron2": BoxFilter(NONEMPTY, SizeRule(None), final=NONEMPTY),
    "nonempty": BoxFilter(NONEMPTY, SizeRule(None)),  # mmdetection
    "none": BoxFilter(SizeRule(None), SizeRule(None)),  # maskrcnn-benchmark
}


RESIZE_RULES = ("torchvision", "round", "maskrcnn_benchmark")
RESIZE_KERNELS = ("float", "opencv", "pil")


def resized_size(height: int, width: int, min_size: int, max_size: int, rule: str = "torchvision") -> tuple[int, int]:
    """The (H, W) an image (``height``, ``width``) is resized to for a short side ``min_size``, long ≤ ``max_size``."""
    short, long = min(height, width), max(height, width)
    if rule == "maskrcnn_benchmark":
        size = min_size
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
        other = int(size * long / short)
        return (size, other) if height <= width else (other, size)
    scale = resize_scale(height, width, min_size, max_size)
    if rule == "round":
        return int(height * scale + 0.5), int(width * scale + 0.5)
    if rule == "torchvision":
        return math.floor(height * scale), math.floor(width * scale)
    raise ValueError(f"resize rule must be one of {', '.join(RESIZE_RULES)}, got {rule!r}")


def _opencv_taps(n_out: int, n_in: int, clamp_weight: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's two bilinear taps per output index and their weights in 1/2048ths, computed as it does: the source
    coordinate in float32, weights rounded half to even. Columns past either border take one tap at full weight
    (``clamp_weight``); rows keep their fractional weights on the clamped rows."""
    scale = 1.0 / (n_out / n_in)
    f = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)
    i = torch.floor(f)
    frac = f - i
    i = i.to(torch.int64)
    outside = (i < 0) | (i >= n_in - 1)
    if clamp_weight:
        frac = torch.where(outside, torch.zeros_like(frac), frac)
    i1 = (i + 1).clamp(0, n_in - 1)
    i0 = i.clamp(0, n_in - 1)
    if clamp_weight:
        i1 = torch.where(outside, i0, i1)
    w1 = torch.round(frac * 2048).to(torch.int32)
    w0 = torch.round((1 - frac) * 2048).to(torch.int32)
    return torch.stack([i0, i1]), w0, w1


_PIL_BITS = 22  # Pillow's fixed-point precision for 8-bit images: 32 bits less 8 for the pixel and 2 for headroom


def _pil_taps(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's bilinear taps for one axis: ``(n_out, k)`` source indices and integer weights (2^-22 units, zero for
    unused taps). The triangle filter's support is one source pixel, widened by the scale when shrinking."""
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    support = filter_scale
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    lo = torch.trunc(centre - support + 0.5).clamp(min=0).to(torch.int64)  # C's (int) cast: toward zero
    hi = torch.trunc(centre + support + 0.5).clamp(max=n_in).to(torch.int64)
    k = int(math.ceil(support)) * 2 + 1
    idx = lo[:, None] + torch.arange(k)[None]
    valid = idx < hi[:, None]
    w = (1 - ((idx.double() - centre[:, None] + 0.5) * (1.0 / filter_scale)).abs()).clamp(min=0) * valid
    w = w / w.sum(1, keepdim=True)
    fixed = torch.trunc(w * (1 << _PIL_BITS) + 0.5).to(torch.int64)  # weights are >= 0: round half up
    return idx.clamp(max=n_in - 1), fixed


def _pil_pass(image: torch.Tensor, n_out: int, dim: int) -> torch.Tensor:
    """One Pillow resampling pass of an int64 image along ``dim``, rounded back to 8-bit levels."""
    idx, w = _pil_taps(n_out, image.shape[dim])
    idx, w = idx.to(image.device), w.to(image.device)
    shape = [1] * image.dim()
    shape[dim] = n_out
    acc = torch.full((), 1 << (_PIL_BITS - 1), dtype=torch.int64, device=image.device)
    for t in range(idx.shape[1]):  # one tap at a time: memory of one image, whatever the scale
        acc = acc + image.index_select(dim, idx[:, t]) * w[:, t].reshape(shape)
    return (acc >> _PIL_BITS).clamp(0, 255)


def resize_8bit(image: torch.Tensor, size: tuple[int, int], kernel: str = "float") -> torch.Tensor:
    """An 8-bit image ``(C, H, W)`` (levels as floats, 0-255) resized bilinearly to ``size`` (H, W), as levels."""
    if kernel == "float":
        out = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        return out.round().clamp(0, 255)
    if kernel == "pil":
        out = image.round().to(torch.int64)
        if size[1] != out.shape[-1]:
            out = _pil_pass(out, size[1], -1)
        if size[0] != out.shape[-2]:
            out = _pil_pass(out, size[0], -2)
        return out.to(image.dtype)
    if kernel != "opencv":
        raise ValueError(f"resize kernel must be one of {', '.join(RESIZE_KERNELS)}, got {kernel!r}")
    h, w = image.shape[-2:]
    (x0, x1), a0, a1 = _opencv_taps(size[1], w, clamp_weight=True)
    (y0, y1), b0, b1 = _opencv_taps(size[0], h, clamp_weight=False)
    dev = image.device
    src = image.round().to(torch.int32)
    cols = src[:, :, x0.to(dev)] * a0.to(dev) + src[:, :, x1.to(dev)] * a1.to(dev)  # exact, < 2^20
    top, bottom = cols[:, y0.to(dev)] >> 4, cols[:, y1.to(dev)] >> 4
    rows = ((top * b0.to(dev)[:, None]) >> 16) + ((bottom * b1.to(dev)[:, None]) >> 16)
    return ((rows + 2) >> 2).clamp(0, 255).to(image.dtype)


def extent(convention: str) -> float:
    """What a box's size adds to x2 − x1: 0 (continuous) or 1 (``plus_one``)."""
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"box convention must be one of {', '.join(BOX_CONVENTIONS)}, got {convention!r}")
    return 1.0 if convention == "plus_one" else 0.0


def box_sizes(boxes: torch.Tensor, convention: str = "continuous") -> torch.Tensor:
    """Widths and heights ``(N, 2)`` of boxes ``(N, 4)`` xyxy."""
    return boxes[:, 2:] - boxes[:, :2] + extent(convention)


def clip_to_image(boxes: torch.Tensor, image_size: tuple[int, int], convention: str = "continuous") -> torch.Tensor:
    """Boxes ``(..., 4)`` clipped to the image (H, W): to [0, W] (continuous) or [0, W − 1] (``plus_one``)."""
    if convention == "continuous":
        return box_ops.clip_boxes_to_image(boxes, image_size)
    h, w = image_size[0] - extent(convention), image_size[1] - extent(convention)
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x, y], dim=-1).reshape(boxes.shape)


def keep_sized(boxes: torch.Tensor, rule: SizeRule, convention: str = "continuous") -> torch.Tensor:
    """Indices of the boxes ``(N, 4)`` that ``rule`` keeps."""
    if rule.size is None:
        return torch.arange(len(boxes), device=boxes.device)
    wh = box_sizes(boxes, convention)
    ok = (wh > rule.size) if rule.strict else (wh >= rule.size)
    return torch.where(ok.all(dim=1))[0]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float,
                convention: str = "continuous") -> torch.Tensor:
    """torchvision's ``batched_nms``, with overlaps and areas in the box convention: a ``plus_one`` box covers
    [x1, x2 + 1), so suppressing the boxes moved out by one pixel gives exactly the +1 IoU."""
    if convention == "plus_one":
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + 1.0], dim=1)
    return box_ops.batched_nms(boxes, scores, idxs, iou_threshold)


def scale_boxes_about_centre(boxes: torch.Tensor, factor: float, convention: str = "continuous") -> torch.Tensor:
    """Boxes ``(N, 4)`` xyxy scaled by ``factor`` about their centres (the conv-head's enlarged RoI).

    ``plus_one``: the size is x2 − x1 + 1, the centre x1 + w/2, and the enlarged box ends at centre + f·w/2 − 1.
    """
    if factor == 1.0:
        return boxes
    if convention == "continuous":
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
        return torch.cat([centre - half, centre + half], dim=1)
    size = box_sizes(boxes, convention)
    centre = boxes[:, :2] + 0.5 * size
    half = 0.5 * size * factor
    return torch.cat([centre - half, centre + half - extent(convention)], dim=1)


def to_convention(boxes: torch.Tensor, convention: str) -> torch.Tensor:
    """Boxes ``(..., 4)`` of the continuous frame (COCO's, the analyses') in the model's convention: a ``plus_one``
    box ends at its last pixel, x2 − 1."""
    if extent(convention) == 0.0:
        return boxes
    return torch.cat([boxes[..., :2], boxes[..., 2:] - extent(convention)], dim=-1)


def from_convention(boxes: torch.Tensor, convention: str) -> torch.Tensor:
    """The model's boxes ``(..., 4)`` in the continuous frame: a ``plus_one`` box [x1, x2] covers [x1, x2 + 1), so
    its COCO width is x2 − x1 + 1 (what maskrcnn-benchmark exports) and its IoU with ground truth is read there."""
    if extent(convention) == 0.0:
        return boxes
    return torch.cat([boxes[..., :2], boxes[..., 2:] + extent(convention)], dim=-1)


class ConventionBoxCoder(BoxCoder):
    """torchvision's box coder with the source's size convention and dw/dh clamp (see the module docstring).

    With ``continuous`` and ``max`` it is torchvision's own code path, bit for bit.
    """

    def __init__(self, weights: tuple[float, float, float, float], convention: str = "continuous",
                 clamp: str = "max"):
        super().__init__(weights, DELTA_CLIP)
        if clamp not in BOX_CLAMPS:
            raise ValueError(f"box clamp must be one of {', '.join(BOX_CLAMPS)}, got {clamp!r}")
        self.extra = extent(convention)
        self.clamp = clamp

    @property
    def is_torchvision(self) -> bool:
        return self.extra == 0.0 and self.clamp == "max"

    def encode_single(self, reference_boxes: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        if self.is_torchvision:
            return super().encode_single(reference_boxes, proposals)
        wx, wy, ww, wh = (torch.tensor(w, dtype=proposals.dtype, device=proposals.device) for w in self.weights)
        p_size = proposals[:, 2:] - proposals[:, :2] + self.extra
        g_size = reference_boxes[:, 2:] - reference_boxes[:, :2] + self.extra
        p_ctr = proposals[:, :2] + 0.5 * p_size
        g_ctr = reference_boxes[:, :2] + 0.5 * g_size
        d_ctr = (g_ctr - p_ctr) / p_size
        d_size = torch.log(g_size / p_size)
        return torch.stack([wx * d_ctr[:, 0], wy * d_ctr[:, 1], ww * d_size[:, 0], wh * d_size[:, 1]], dim=1)

    def decode_single(self, rel_codes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        if self.is_torchvision:
            return super().decode_single(rel_codes, boxes)
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0] + self.extra
        heights = boxes[:, 3] - boxes[:, 1] + self.extra
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy
        dw, dh = rel_codes[:, 2::4] / ww, rel_codes[:, 3::4] / wh
        low = -self.bbox_xform_clip if self.clamp == "both" else None
        dw = torch.clamp(dw, min=low, max=self.bbox_xform_clip)
        dh = torch.clamp(dh, min=low, max=self.bbox_xform_clip)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * torch.exp(dw) * widths[:, None]
        half_h = 0.5 * torch.exp(dh) * heights[:, None]
        out = (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w - self.extra,
               pred_ctr_y + half_h - self.extra)
        return torch.stack(out, dim=2).flatten(1)


class ConventionRPN(RegionProposalNetwork):
    """torchvision's RPN whose proposal filter clips, drops small boxes and suppresses in the source's conventions.

    The order is torchvision's (and detectron2's, mmdetection's, maskrcnn-benchmark's): the top ``pre_nms_top_n``
    anchors per level, decode, clip, the small-box rule, per-level NMS, the top ``post_nms_top_n`` per image.
    """

    def __init__(self, *args, box_convention: str = "continuous", box_filter: str = "torchvision", **kwargs):
        super().__init__(*args, **kwargs)
        self.box_convention = box_convention
        self.size_rule = BOX_FILTERS[box_filter].proposals

    def filter_proposals(self, proposals: torch.Tensor, objectness: torch.Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = proposals.shape[0]
        objectness = objectness.detach().reshape(n, -1)
        levels = torch.cat([torch.full((k,), i, dtype=torch.int64, device=proposals.device)
                            for i, k in enumerate(num_anchors_per_level)]).reshape(1, -1).expand_as(objectness)
        top = self._get_top_n_idx(objectness, num_anchors_per_level)
        rows = torch.arange(n, device=proposals.device)[:, None]
        scores_all, levels, proposals = objectness[rows, top].sigmoid(), levels[rows, top], proposals[rows, top]
        final_boxes, final_scores = [], []
        for boxes, scores, lvl, shape in zip(proposals, scores_all, levels, image_shapes):
            boxes = clip_to_image(boxes, shape, self.box_convention)
            keep = keep_sized(boxes, self.size_rule, self.box_convention)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh, self.box_convention)[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores


__all__ = ["RESIZE_RULES", "resized_size", "BOX_CONVENTIONS", "BOX_CLAMPS", "BOX_FILTERS", "NONEMPTY", "SizeRule",
           "BoxFilter", "extent", "box_sizes",
           "clip_to_image", "keep_sized", "batched_nms", "scale_boxes_about_centre", "to_convention", "from_convention",
           "ConventionBoxCoder", "ConventionRPN"]

"""Score boxes with every head of a model: the classification score of the true class and the IoU after regression.

For each box (a sliding-window proposal, or an RPN proposal) and each head that has the task:

- ``score``: the head's softmax probability of the ground-truth class (§3.2);
- ``reg_iou``: the IoU between the ground truth and the box regressed with *that class's* deltas (§3.3), the
  regressed box clipped to the image as the detector's own outputs are.

All boxes of an image go through RoIAlign and the heads in batches of ``batch_size`` on the features computed once
per image (`runner.ImageContext`). Work is in the resized image's frame; IoU is scale invariant, so nothing is mapped
back. A NaN score or box is a `DHError`, never averaged in.

Two paths compute the same numbers. `score_boxes` is the straightforward one: the model's own ``probe`` with the
``"torchvision"`` pooling backend (torchvision RoIAlign per level, the NCHW head modules, decoding of every class).
`FastScorer` is what the sliding-window analysis (`sliding_window.SlidingWindowTask`) uses: RoIAlign as one
weighted gather into channels-last rows (`dhanalysis.model.gather_roi`), the heads in their inference form (each
head's ``inference_form``: matmul chains with folded BatchNorm, assembled by `fast_heads`), optionally in bf16, and
only the ground-truth class decoded. Their
statistics agree to float32 rounding (tests/test_fast_path.py); BENCHMARKS.md measures both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from dhanalysis.probes.fast_heads import FastHeads
from dhanalysis.boxes import clip_boxes, matched_iou
from dhanalysis.engine.distributed import cpu_has_bf16
from dhanalysis.errors import DHError, OutOfMemory
from dhanalysis.model.conventions import from_convention, scale_boxes_about_centre, to_convention
from dhanalysis.model.gather_roi import FeatureTable, map_levels, pool_rows
from dhanalysis.model.heads import modules_in_eval
from dhanalysis.vocab import HEAD_TYPES

log = logging.getLogger(__name__)

MIN_BATCH = 16
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def head_tasks(model) -> dict[str, dict[str, bool]]:
    """{head type: {"cls": bool, "reg": bool}} over the model's branches, fc before conv.

    Two branches of one head type (Double-FC, Double-Conv) are merged the way the probe merges them.
    """
    tasks: dict[str, dict[str, bool]] = {}
    for branch in model.roi_heads.branches.values():
        entry = tasks.setdefault(branch.head_type, {"cls": False, "reg": False})
        entry["cls"] |= branch.predictor.cls_score is not None
        entry["reg"] |= branch.predictor.bbox_pred is not None
    return {h: tasks[h] for h in HEAD_TYPES if h in tasks}


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a RuntimeError that says it ran out of memory (CPU allocators)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom) and isinstance(exc, oom)) or (isinstance(exc, RuntimeError) and "memory" in str(exc).lower())


class AdaptiveBatch:
    """Run a function over ``[0, n)`` in batches; on out-of-memory halve the batch and retry, down to ``floor``.

    The halved size is kept for later calls: memory that was short once stays short.
    """

    def __init__(self, size: int, floor: int = MIN_BATCH):
        if size < 1:
            raise DHError(f"batch size must be at least 1, got {size}")
        self.size, self.floor = size, min(floor, size)

    def map(self, fn: Callable[[int, int], Any], n: int) -> list[Any]:
        """``[fn(start, stop) for each batch]`` in order."""
        out, start = [], 0
        while start < n:
            stop = min(start + self.size, n)
            try:
                out.append(fn(start, stop))
            except Exception as exc:  # noqa: BLE001 - only memory errors are handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if self.size <= self.floor:
                    raise OutOfMemory(self.size, f"out of memory even at batch size {self.size} (the floor of the "
                                      "automatic halving); free device memory or run on the CPU") from None
                self.size = max(self.floor, self.size // 2)
                log.warning("out of memory: retrying with batch size %d", self.size)
                continue
            start = stop
        return out


def score_boxes(
    model,
    features: dict[str, torch.Tensor],
    image_size: tuple[int, int],
    boxes: torch.Tensor,
    labels: torch.Tensor,
    gt_boxes: torch.Tensor,
    batcher: AdaptiveBatch,
    clip_regressed: bool = True,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-head scores and regressed IoUs of boxes in one image.

    Args:
        features: the image's FPN features (batch of one); ``image_size``: its resized (height, width).
        boxes: ``(P, 4)`` xyxy in the resized image; ``labels``: ``(P,)`` the class (1..C) to read for each box;
        gt_boxes: ``(P, 4)`` the ground truth each box is compared with after regression.
        clip_regressed: clip regressed boxes to the image before the IoU, as the detector's outputs are (the
            ground truth lies inside the image, so clipping can only raise the IoU).

    Returns:
        {head type: {"score": (P,) float32, "reg_iou": (P,) float32}}, each key only when the head has the task;
        empty when there are no boxes.
    """
    roi_heads = model.roi_heads
    height, width = image_size

    def run(start: int, stop: int) -> dict[str, dict[str, torch.Tensor]]:
        with modules_in_eval(model):  # the straightforward arithmetic: torchvision's RoIAlign, the NCHW modules
            out = roi_heads.probe(features, [boxes[start:stop]], [image_size], backend="torchvision")
        rows = torch.arange(stop - start, device=boxes.device)
        lab = labels[start:stop]
        result: dict[str, dict[str, torch.Tensor]] = {}
        for head, parts in out.items():
            if "scores" in parts:
                result.setdefault(head, {})["score"] = parts["scores"][rows, lab]
            if "boxes" in parts:
                regressed = parts["boxes"][rows, lab]
                result.setdefault(head, {}).update(
                    regressed_iou(regressed, gt_boxes[start:stop], height, width, clip_regressed))
        return result

    return merge_batches(batcher.map(run, len(boxes)))


def regressed_iou(regressed: torch.Tensor, gt: torch.Tensor, height: int, width: int,
                  clip: bool) -> dict[str, torch.Tensor]:
    """``reg_iou`` (P,) of regressed boxes (P, 4) with their ground truth, and ``box_nan`` (P,) flags.

    A NaN box would silently get IoU 0, so the flags are kept for `check_finite` after the batches.
    """
    box_nan = torch.isnan(regressed).any(dim=1)
    if clip:
        regressed = clip_boxes(regressed, height, width)
    return {"box_nan": box_nan, "reg_iou": matched_iou(regressed, gt)}


def merge_batches(batches: list[dict[str, dict[str, torch.Tensor]]]) -> dict[str, dict[str, torch.Tensor]]:
    """Concatenate per-batch head outputs and refuse NaNs (one host sync per image)."""
    merged = {head: {k: torch.cat([b[head][k] for b in batches]) for k in batches[0][head]}
              for head in (batches[0] if batches else {})}
    check_finite(merged)
    return merged


def check_finite(merged: dict[str, dict[str, torch.Tensor]]) -> None:
    """Refuse NaN scores or regressed boxes (one device-to-host sync per image, not per batch)."""
    for head, parts in merged.items():
        nan_boxes = parts.pop("box_nan", None)
        for what, bad in (("scores", "score" in parts and torch.isnan(parts["score"]).any()),
                          ("regressed boxes", nan_boxes is not None and nan_boxes.any())):
            if bad:
                raise DHError(f"the {head}-head gives NaN {what}; the checkpoint's weights are probably diverged")


class FastScorer:
    """`score_boxes` for many boxes: fast RoIAlign + matmul heads (+ bf16 when ``precision="bf16"``), same outputs.

    Built from the model once (weights are copied, BatchNorm folded); the model must be in eval mode and must not
    change afterwards. Only the ground-truth class's deltas are decoded, which is all the statistics read.
    """

    def __init__(self, model, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise DHError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        roi_heads = model.roi_heads
        self.precision, self.dtype = precision, PRECISIONS[precision]
        device = next(model.parameters()).device
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            log.warning("precision 'bf16' on a CPU without bf16 units (%s): matmuls are emulated and far slower "
                        "than fp32 here (BENCHMARKS.md)", torch.backends.cpu.get_cpu_capability())
        self.pooler = roi_heads.box_roi_pool
        self.box_coder = roi_heads.box_coder
        self.heads = FastHeads(roi_heads, self.dtype)
        self.conv_roi_scale = roi_heads.conv_roi_scale

    def flops_per_roi(self) -> int:
        """Head FLOPs (2·MACs of every matmul of every branch and predictor) per scored box."""
        return self.heads.flops_per_roi()

    def feature_table(self, features: dict[str, torch.Tensor], image_size: tuple[int, int]
                      ) -> tuple[FeatureTable, list[float]]:
        """The image's pooled FPN levels as one channels-last table (built once per image), and their scales."""
        maps = [features[k] for k in self.pooler.featmap_names]
        if any(m.shape[0] != 1 for m in maps):
            raise ValueError("the fast scorer pools one image at a time; pass that image's features (batch of one)")
        scales = self.pooler.scales(maps, [image_size])
        return FeatureTable.from_features(maps, scales, self.dtype), scales

    def score(self, features: dict[str, torch.Tensor], image_size: tuple[int, int], boxes: torch.Tensor,
              labels: torch.Tensor, gt_boxes: torch.Tensor, batcher: AdaptiveBatch,
              clip_regressed: bool = True) -> dict[str, dict[str, torch.Tensor]]:
        """Same arguments and result as `score_boxes`."""
        if len(boxes) == 0:
            return {}
        table, scales = self.feature_table(features, image_size)
        size, ratio, aligned = self.pooler.output_size[0], self.pooler.sampling_ratio, self.pooler.aligned
        convention = self.pooler.box_convention
        levels = map_levels(to_convention(boxes, convention), scales, convention)
        height, width = image_size

        def run(start: int, stop: int) -> dict[str, dict[str, torch.Tensor]]:
            b, lvl = to_convention(boxes[start:stop], convention), levels[start:stop]
            pooled = {}
            if "plain" in self.heads.pooled_keys:
                pooled["plain"] = pool_rows(table, b, lvl, size, ratio, aligned=aligned)
            if "enlarged" in self.heads.pooled_keys:  # on the level of the box itself, as the detector pools it
                enlarged = scale_boxes_about_centre(b, self.conv_roi_scale, self.pooler.box_convention)
                pooled["enlarged"] = pool_rows(table, enlarged, lvl, size, ratio, aligned=aligned)
            rows = torch.arange(stop - start, device=boxes.device)
            lab = labels[start:stop]
            result: dict[str, dict[str, torch.Tensor]] = {}
            for head, tasks in self.heads(pooled).items():
                if "cls" in tasks:
                    result.setdefault(head, {})["score"] = tasks["cls"].softmax(-1)[rows, lab]
                if "reg" in tasks:
                    deltas = tasks["reg"].reshape(len(b), -1, 4)[rows, lab]
                    regressed = from_convention(self.box_coder.decode_single(deltas, b.float()), convention)
                    result.setdefault(head, {}).update(
                        regressed_iou(regressed, gt_boxes[start:stop], height, width, clip_regressed))
            return result

        return merge_batches(batcher.map(run, len(boxes)))


def sample_per_box(owner: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of up to ``k`` random rows per owner (``owner`` ``(P,)`` sorted ascending), from ``generator``."""
    keys = torch.rand(len(owner), generator=generator, dtype=torch.float64).to(owner.device)
    order = torch.argsort(owner.double() + keys)  # random order within each owner, owners kept apart
    sorted_owner = owner[order]
    first = torch.searchsorted(sorted_owner, sorted_owner, right=False)
    rank = torch.arange(len(owner), device=owner.device) - first
    return order[rank < k]


__all__ = ["head_tasks", "AdaptiveBatch", "is_out_of_memory", "score_boxes", "FastScorer", "PRECISIONS",
           "sample_per_box"]

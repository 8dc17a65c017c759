"""Pure box functions that torchvision.ops does not have.

All boxes are ``(..., 4)`` xyxy in absolute pixels. torchvision's ``box_iou`` is pairwise (N×M); the analyses mostly
need the IoU of *matched* pairs (proposal i against its own ground truth), which is one value per row and never
materialises an N×M matrix.
"""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas ``(...)`` of boxes ``(..., 4)``; inverted boxes count as empty."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def matched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of row-wise pairs: ``a`` and ``b`` broadcast to ``(..., 4)``, the result is ``(...)``.

    Two empty boxes have IoU 0 (not NaN), so a degenerate box can never poison a mean.
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Boxes ``(..., 4)`` clipped to the image ``[0, width] × [0, height]``, as RPN proposals and detections are."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def box_centres(boxes: torch.Tensor) -> torch.Tensor:
    """Centres ``(..., 2)`` of boxes ``(..., 4)``."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2

"""Transforms on ``(image, target)`` pairs: the paper's only augmentation is a horizontal flip in training (§4.1).

The detector (torchvision's ``GeneralizedRCNNTransform``) already resizes every image so its short side is
``min_size`` and its long side at most ``max_size``, so the training pipeline does not resize again by default. `Resize`
is for users who want resized images outside the model (and for analyses that need boxes in the model's frame). There
is no test-time augmentation.

Images are float tensors (C, H, W); ``target["boxes"]`` is (N, 4) float xyxy in absolute pixels.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from dhanalysis.vocab import resize_scale

Target = dict[str, Any]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({', '.join(repr(t) for t in self.transforms)})"


def hflip_boxes(boxes: torch.Tensor, width: int | float) -> torch.Tensor:
    """Mirror xyxy boxes (N, 4) in an image of ``width`` pixels: x1' = W - x2, x2' = W - x1."""
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return flipped


class RandomHorizontalFlip:
    """Flip image and boxes left-right with probability ``p`` (torch's global RNG, seeded per DataLoader worker)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        if self.p <= 0 or (self.p < 1 and torch.rand(1).item() >= self.p):
            return image, target
        image = image.flip(-1)
        target = dict(target)
        target["flipped"] = True  # lets a cache of frozen-trunk features tell the two versions of an image apart
        if "boxes" in target:
            target["boxes"] = hflip_boxes(target["boxes"], image.shape[-1])
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Output (H, W) when the short side goes to ``min_size`` unless the long side would pass ``max_size``.

    The scale is the one torchvision's ``GeneralizedRCNNTransform`` picks, so a resized image needs no further resize
    inside the model.
    """
    scale = resize_scale(height, width, min_size, max_size)
    return int(math.floor(height * scale)), int(math.floor(width * scale))


class Resize:
    """Resize so the short side is ``min_size`` and the long side at most ``max_size``; boxes are scaled to match.

    Bilinear without antialiasing, as the detector's own resize does, so both give the same pixels. ``orig_size``
    (H, W) of the unresized image is kept in the target (set here when the dataset did not set it), and ``area`` is
    scaled with the boxes.
    """

    def __init__(self, min_size: int = 800, max_size: int = 1333) -> None:
        if min_size <= 0 or max_size < min_size:
            raise ValueError(f"need 0 < min_size <= max_size, got min_size={min_size}, max_size={max_size}")
        self.min_size = min_size
        self.max_size = max_size

    def __call__(self, image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
        height, width = image.shape[-2:]
        target = dict(target)
        target.setdefault("orig_size", torch.tensor([height, width], dtype=torch.int64))
        scale = resize_scale(height, width, self.min_size, self.max_size)
        if scale == 1.0:
            return image, target
        # The same call as the detector's resize, so the output size is computed the same way (floor of H * scale).
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]
        new_h, new_w = image.shape[-2:]
        # Scale each axis by the ratio of the integer sizes actually produced, as torchvision's resize_boxes does.
        sx, sy = new_w / width, new_h / height
        if "boxes" in target:
            target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype)
        if "area" in target:
            target["area"] = target["area"] * (sx * sy)
        return image, target

    def __repr__(self) -> str:
        return f"Resize(min_size={self.min_size}, max_size={self.max_size})"


def build_transforms(
    train: bool,
    hflip_prob: float = 0.5,
    min_size: int = 800,
    max_size: int = 1333,
    resize: bool = False,
) -> Compose:
    """The paper's pipeline: a horizontal flip in training only, nothing at test time; ``resize`` adds `Resize`.

    ``resize`` is off by default because the model resizes internally (see the module docstring).
    """
    transforms: list[Callable[[torch.Tensor, Target], tuple[torch.Tensor, Target]]] = []
    if resize:
        transforms.append(Resize(min_size, max_size))
    if train and hflip_prob > 0:
        transforms.append(RandomHorizontalFlip(hflip_prob))
    return Compose(transforms)

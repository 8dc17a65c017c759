"""Tiny models and inputs shared by the tests (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import torch

from dhanalysis.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "model.backbone.weights=null",
    "model.backbone.norm=bn",
    "model.backbone.trainable_layers=5",
    "model.num_classes=3",
    "model.min_size=96",
    "model.max_size=128",
    "model.backbone.fpn_channels=16",
    "model.head.fc_dim=32",
    "model.head.conv_dim=32",
    "model.head.bottleneck_dim=8",
    "model.head.non_local_dim=16",
    "model.rpn.pre_nms_top_n_test=50",
    "model.rpn.post_nms_top_n_test=30",
    "model.box_batch_size_per_image=32",
]


def tiny_config(variant: str, *overrides: str) -> Config:
    """The synthetic preset of ``variant``, shrunk further so one forward/backward takes well under a second."""
    return load_config(ROOT / "configs" / "synth" / f"{variant}.yaml", TINY + list(overrides))


def two_images(seed: int = 0) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 100, 120, generator=g), torch.rand(3, 110, 90, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 70.0, 80.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0], [30.0, 40.0, 85.0, 100.0]]), "labels": torch.tensor([1, 3])},
    ]
    return images, targets

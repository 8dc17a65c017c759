"""Tiny models and inputs shared by the tests (CPU, seconds)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dhanalysis.config import Config, load_config, preset_path

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
    "model.head.num_blocks=3",
    "model.rpn.pre_nms_top_n_test=50",
    "model.rpn.post_nms_top_n_test=30",
    "model.box_batch_size_per_image=32",
]


def tiny_config(variant: str, *overrides: str) -> Config:
    """The synthetic preset of ``variant``, shrunk further so one forward/backward takes well under a second."""
    return load_config(preset_path(f"synth/{variant}.yaml"), TINY + list(overrides))


def two_images(seed: int = 0) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 100, 120, generator=g), torch.rand(3, 110, 90, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 70.0, 80.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0], [30.0, 40.0, 85.0, 100.0]]), "labels": torch.tensor([1, 3])},
    ]
    return images, targets


# Float32 model outputs differ in their last bits between CPUs (AVX2, AVX-512, AMX kernels) and between batch
# compositions (oneDNN picks kernels by shape), so sums of scores and regressed IoUs are compared at float32
# tolerance. What does not come from the model (keys, counts, proposal IoUs) is compared exactly, up to the float64
# summation order of the same values.
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-6
STAT_KEYS = ["model", "head", "category_id", "size", "bin"]
MODEL_SUMS = ["sum_s", "sum_s2", "sum_xs", "sum_r", "sum_r2", "sum_xr"]


def assert_same_statistics(a: pd.DataFrame, b: pd.DataFrame, keys: list[str] | None = None) -> None:
    """Two sliding-window statistics tables hold the same windows and the same model outputs (float32 tolerance)."""
    keys = [k for k in (keys or STAT_KEYS) if k in a.columns]
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    exact = keys + ["n", "n_s", "n_r"]
    assert a[exact].astype(str).equals(b[exact].astype(str)), "the tables hold different windows"
    np.testing.assert_allclose(a[["sum_x", "sum_x2"]].to_numpy(float), b[["sum_x", "sum_x2"]].to_numpy(float),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a[MODEL_SUMS].to_numpy(float), b[MODEL_SUMS].to_numpy(float), rtol=FLOAT32_RTOL,
                               atol=FLOAT32_ATOL)


@torch.no_grad()
def randomise_norms(model: torch.nn.Module) -> None:
    """Random BatchNorm statistics and affine parameters, in place (torchvision's and mmdetection's names), so that a
    converter that drops, misplaces or mis-folds them changes the outputs."""
    for name, t in model.state_dict().items():
        if name.endswith("running_var"):
            t.uniform_(0.5, 2.0)
        elif name.endswith("running_mean"):
            t.normal_(0.0, 0.2)
        elif re.search(r"(\.bn\d?|downsample\.1)\.weight$", name):
            t.uniform_(0.3, 0.8)
        elif re.search(r"(\.bn\d?|downsample\.1)\.bias$", name):
            t.normal_(0.0, 0.1)

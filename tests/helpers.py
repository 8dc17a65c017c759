"""Tiny models and inputs shared by the tests (CPU, seconds)."""

from __future__ import annotations

import re
from dataclasses import dataclass
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


@dataclass
class DetectionMatch:
    """How one image's detections meet a reference library's: each of ours is *close* (within ``box_tol`` px of a
    reference detection of its label), *swapped* (a near-tie in NMS: it overlaps a reference detection of its label
    beyond the NMS threshold with a score within ``tie``, so rounding ordered the cluster's candidates the other
    way and the libraries kept different members of it), *under the cap* (scored below the reference's lowest kept
    detection: a swap that suppressed one box fewer lets one more in under the per-image cap) or none of these."""

    count: int  # our detections
    ref_count: int  # the reference's
    close: int
    swapped: int
    under_cap: int
    box_gap: float  # the largest distance to the nearest reference box of the ones a near-tie does not explain
    score_gap: float  # the largest score difference of the close ones

    @property
    def explained(self) -> int:
        """Detections a near-tie explains: each swap, and at most one detection under the cap per swap."""
        return self.swapped + min(self.under_cap, self.swapped)

    def credited(self, most: float) -> int:
        """The near-ties a comparison credits: at most the share ``most`` of our detections (a systematic difference
        moves far more, and would be explained as swaps if the credit had no bound)."""
        return min(self.explained, int(most * self.count))


def match_detections(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], nms_iou: float, tie: float,
                     box_tol: float = 0.01) -> DetectionMatch:
    """Our detections (``boxes``, ``scores``, ``labels``) against a reference library's of the same image, matched
    by nearest box of the same label (in float64, so the match does not round), near-ties told apart from
    differences (see `DetectionMatch`)."""
    from torchvision.ops import box_iou

    if not len(ours["boxes"]) or not len(ref["boxes"]):
        return DetectionMatch(len(ours["boxes"]), len(ref["boxes"]), 0, 0, 0,
                              0.0 if not len(ours["boxes"]) else float("inf"), 0.0)
    boxes, ref_boxes = ours["boxes"].double(), ref["boxes"].double()
    scores, ref_scores = ours["scores"].double(), ref["scores"].double()
    same_label = ours["labels"][:, None] == ref["labels"][None, :]
    dist = torch.cdist(boxes, ref_boxes, p=float("inf"))
    dist[~same_label] = float("inf")
    nearest, index = dist.min(dim=1)
    close = nearest <= box_tol
    tied = same_label & (box_iou(boxes, ref_boxes) > nms_iou) & ((scores[:, None] - ref_scores[None, :]).abs() <= tie)
    swapped = ~close & tied.any(dim=1)
    under_cap = ~close & ~swapped & (scores < ref_scores.min() - tie)
    unexplained = ~swapped & ~under_cap
    gaps = (scores[close] - ref_scores[index[close]]).abs()
    return DetectionMatch(len(boxes), len(ref_boxes), int(close.sum()), int(swapped.sum()), int(under_cap.sum()),
                          float(nearest[unexplained].max()) if unexplained.any() else 0.0,
                          float(gaps.max()) if len(gaps) else 0.0)

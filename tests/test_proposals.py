"""Sliding-window proposals (§3.1): counts, even IoU coverage, clipping, and IoUs against torchvision."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from dhanalysis.analysis.proposals import grid_shape, sliding_window_grid, sliding_window_proposals
from dhanalysis.analysis.scoring import sample_per_box
from dhanalysis.analysis.stats import NUM_BINS, iou_bin
from dhanalysis.boxes import matched_iou
from dhanalysis.errors import DHError

IMAGE = (1000, 1200)  # height, width
# well inside the image even for the largest windows (2.7x the box, shifted by one box size)
SHAPES = {
    "square": [500.0, 400.0, 600.0, 500.0],
    "wide": [450.0, 480.0, 650.0, 500.0],  # 10:1
    "tall": [580.0, 380.0, 600.0, 540.0],  # 1:8
    "small": [600.0, 500.0, 608.0, 506.0],  # 8 x 6 pixels, COCO "small"
}


def bin_shares(iou: torch.Tensor) -> torch.Tensor:
    return torch.bincount(iou_bin(iou), minlength=NUM_BINS).double() / len(iou)


@pytest.mark.parametrize("requested", [300, 2000, 14_000, 20_000])
def test_count_per_box_is_close_to_requested(requested):
    n_pos, n_size = grid_shape(requested)
    assert abs(n_pos * n_size - requested) / requested < 0.03
    gt = torch.tensor([SHAPES["square"]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, requested)
    assert len(boxes) == n_pos * n_size  # nothing clipped away for a box well inside the image
    assert torch.equal(owner, torch.zeros(len(boxes), dtype=torch.long))


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("requested", [1000, 14_000])
def test_every_iou_bin_gets_at_least_one_percent(shape, requested):
    gt = torch.tensor([SHAPES[shape]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, requested)
    iou = matched_iou(boxes, gt[owner])
    shares = bin_shares(iou)
    assert shares.min() >= 0.01, f"{shape}: smallest bin share {shares.min():.4f}"
    assert iou.max() == pytest.approx(1.0)  # the box itself (grid row 0)
    assert (iou == 0).any()  # some windows are pure background


def test_iou_matches_torchvision_box_iou():
    gt = torch.tensor([SHAPES["square"], SHAPES["wide"], [0.0, 0.0, 90.0, 70.0]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, 500)
    ours = matched_iou(boxes, gt[owner])
    reference = box_iou(boxes, gt)[torch.arange(len(boxes)), owner]
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_windows_are_clipped_and_degenerate_ones_dropped():
    gt = torch.tensor([[0.0, 0.0, 80.0, 60.0], [1150.0, 950.0, 1200.0, 1000.0], SHAPES["square"]])
    boxes, owner = sliding_window_proposals(gt, IMAGE, 2000)
    h, w = IMAGE
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 1e-3).all()
    counts = torch.bincount(owner, minlength=3)
    n = grid_shape(2000)[0] * grid_shape(2000)[1]
    assert counts[2] == n and counts[0] <= n and counts[1] <= n
    assert torch.equal(owner, owner.sort().values)  # grouped by box, in box order


def test_grid_is_deterministic_and_starts_with_the_box_itself():
    a, b = sliding_window_grid(5000), sliding_window_grid(5000)
    assert torch.equal(a, b)
    assert torch.equal(a[0], torch.zeros(4, dtype=a.dtype))
    assert len(torch.unique(a, dim=0)) == len(a)


def test_integer_boxes_and_bad_density():
    boxes, _ = sliding_window_proposals(torch.tensor([[500, 400, 600, 500]]), IMAGE, 100)
    assert boxes.is_floating_point()
    with pytest.raises(DHError, match="--proposals-per-gt"):
        grid_shape(0)


def test_raw_sample_takes_k_per_box_reproducibly():
    owner = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    pick = sample_per_box(owner, 4, torch.Generator().manual_seed(1))
    assert torch.bincount(owner[pick], minlength=3).tolist() == [4, 3, 4]
    again = sample_per_box(owner, 4, torch.Generator().manual_seed(1))
    assert torch.equal(pick, again)
    assert len(set(pick.tolist())) == len(pick)
